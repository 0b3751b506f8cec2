"""Robot testbed bridge: serve a gymnasium env over TCP, drive it remotely behind a safety shield."""

from sim2real.testbed.client import RemoteEnv
from sim2real.testbed.latency import measure_round_trip
from sim2real.testbed.protocol import (
    PROTOCOL_VERSION,
    HandshakeError,
    ProtocolError,
    RemoteError,
    TestbedError,
    TestbedTimeout,
    decode_space,
    encode_space,
    spaces_match,
)
from sim2real.testbed.safety import SafetyShield
from sim2real.testbed.server import ServerProcess, TestbedServer, serve

__all__ = [
    "PROTOCOL_VERSION",
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
    "measure_round_trip",
    "serve",
    "spaces_match",
]
