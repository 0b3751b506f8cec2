"""Robot testbed bridge: serve a gymnasium env over TCP (shared key, TLS), drive it remotely behind a safety shield."""

from sim2real.testbed.auth import generate_key_file, load_key_file
from sim2real.testbed.client import RemoteEnv
from sim2real.testbed.credentials import Credentials
from sim2real.testbed.encoding import decode_space, encode_space, spaces_match
from sim2real.testbed.process import ServerProcess, serve
from sim2real.testbed.protocol import (
    PROTOCOL_VERSION,
    HandshakeError,
    ProtocolError,
    RemoteError,
    TestbedError,
    TestbedTimeout,
)
from sim2real.testbed.safety import SafetyShield
from sim2real.testbed.server import TestbedServer
from sim2real.testbed.tls import server_context

__all__ = [
    "PROTOCOL_VERSION",
    "Credentials",
    "HandshakeError",
    "ProtocolError",
    "RemoteEnv",
    "RemoteError",
    "SafetyShield",
    "ServerProcess",
    "TestbedError",
    "TestbedServer",
    "TestbedTimeout",
    "decode_space",
    "encode_space",
    "generate_key_file",
    "load_key_file",
    "serve",
    "server_context",
    "spaces_match",
]
