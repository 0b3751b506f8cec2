"""Testbed wire protocol: length-prefixed msgpack frames, typed messages, error codes, versions.

A frame is a u32 big-endian length (1 .. ``MAX_FRAME_BYTES``) followed by that many bytes of one
msgpack map with a ``"type"`` key (on an authenticated link, after the handshake, followed by a
``TAG_BYTES`` tag: see ``sim2real.testbed.auth``); arrays and spaces in it are :mod:`.encoding`'s. Nothing
is ever pickled, and unpacking runs with strict size limits, so a peer can
at worst get a typed error back, never run code or exhaust memory.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any

import msgpack

from sim2real.errors import Sim2RealError, allowed

PROTOCOL_VERSION = "2.0"
MAX_FRAME_BYTES = 1 << 20
TAG_BYTES = 16
NONCE_BYTES = 32
HEADER = struct.Struct(">I")
MAX_DEPTH = 16

HELLO = "hello"
CHALLENGE = "challenge"
AUTH = "auth"
WELCOME = "welcome"
RESET = "reset"
RESET_OK = "reset_ok"
STEP = "step"
STEP_OK = "step_ok"
HEARTBEAT = "heartbeat"
HEARTBEAT_OK = "heartbeat_ok"
CLOSE = "close"
ERROR = "error"


class Code:
    """Error codes carried by ERROR messages (and by :class:`ProtocolError`)."""

    BAD_FRAME = "bad_frame"
    BAD_MESSAGE = "bad_message"
    BAD_ARRAY = "bad_array"
    UNKNOWN_TYPE = "unknown_type"
    HANDSHAKE = "handshake"
    VERSION = "version"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"
    EPISODE = "episode"
    SEQ_GAP = "seq_gap"
    STALE_SEQ = "stale_seq"
    EPISODE_OVER = "episode_over"
    BAD_ACTION = "bad_action"
    ENV_ERROR = "env_error"
    TIMEOUT = "timeout"
    INTERNAL = "internal"

    ALL = (
        BAD_FRAME, BAD_MESSAGE, BAD_ARRAY, UNKNOWN_TYPE, HANDSHAKE, VERSION, AUTH, RATE_LIMITED, BUSY, EPISODE,
        SEQ_GAP, STALE_SEQ, EPISODE_OVER, BAD_ACTION, ENV_ERROR, TIMEOUT, INTERNAL,
    )


class TestbedError(Sim2RealError):
    """Any failure talking to a testbed: unreachable, refused, malformed or out-of-order traffic."""

    __test__ = False  # not a pytest test class, even when imported into a test module


class TestbedTimeout(TestbedError):
    """The testbed did not answer within the deadline (server hung, network stalled)."""


class HandshakeError(TestbedError):
    """Client and server disagree on the protocol version or the observation/action spaces."""


class ProtocolError(TestbedError):
    """A frame or message violates the protocol; ``code`` is one of :class:`Code`."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.detail = message
        super().__init__(f"{code}: {message}")


class RemoteError(TestbedError):
    """The peer answered with an ERROR message; ``code`` says which rule was broken."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.remote_message = message
        super().__init__(f"testbed refused ({code}): {message}")


_NONE = type(None)
_NUM = (int, float)
# type -> {field: (accepted python types, required)}; extra fields are ignored (minor versions).
_SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    HELLO: {"version": ((str,), True), "session": ((str, _NONE), False), "nonce": ((bytes, _NONE), False)},
    CHALLENGE: {"nonce": ((bytes,), True)},
    AUTH: {"proof": ((bytes,), True)},
    WELCOME: {
        "version": ((str,), True),
        "session": ((str,), True),
        "observation_space": ((dict,), True),
        "action_space": ((dict,), True),
    },
    RESET: {"seed": ((int, _NONE), False), "options": ((dict, _NONE), False)},
    RESET_OK: {"episode": ((int,), True), "obs": ((list, int, float), True), "info": ((dict,), True),
               "env_ms": (_NUM, True)},
    STEP: {"episode": ((int,), True), "seq": ((int,), True), "action": ((list, int, float), True)},
    STEP_OK: {
        "episode": ((int,), True),
        "seq": ((int,), True),
        "obs": ((list, int, float), True),
        "reward": (_NUM, True),
        "terminated": ((bool,), True),
        "truncated": ((bool,), True),
        "info": ((dict,), True),
        "env_ms": (_NUM, True),
    },
    HEARTBEAT: {},
    HEARTBEAT_OK: {},
    CLOSE: {},
    ERROR: {"code": ((str,), True), "message": ((str,), True)},
}
MESSAGE_TYPES = tuple(_SCHEMA)
_FREE_FORM = ("options", "info")


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not accepted")


def pack_body(message: Mapping[str, Any], max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Serialise one message into a frame body, leaving room for a tag; refuses bodies over the cap."""
    body = msgpack.packb(message, use_bin_type=True)
    if len(body) > max_bytes - TAG_BYTES:
        raise ProtocolError(
            Code.BAD_FRAME, f"message of {len(body)} bytes exceeds the {max_bytes - TAG_BYTES}-byte cap"
        )
    return body


def frame(body: bytes) -> bytes:
    """Prefix a (possibly tagged) body with its length."""
    return HEADER.pack(len(body)) + body


def pack_frame(message: Mapping[str, Any], max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Serialise one message into a length-prefixed frame; refuses frames over the cap."""
    return frame(pack_body(message, max_bytes))


def check_length(length: int, max_bytes: int = MAX_FRAME_BYTES) -> int:
    """Validate a frame length read from a header: 1 .. max_bytes."""
    if length == 0 or length > max_bytes:
        raise ProtocolError(Code.BAD_FRAME, f"frame length {length} is outside the accepted 1..{max_bytes}")
    return length


def unpack_message(body: bytes, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Decode and validate one frame body into a message dict (never trusts the peer)."""
    try:
        message = msgpack.unpackb(
            body, raw=False, strict_map_key=True, use_list=True, ext_hook=_reject_ext,
            max_str_len=max_bytes, max_bin_len=max_bytes, max_array_len=100_000,
            max_map_len=10_000, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for garbage input
        raise ProtocolError(Code.BAD_MESSAGE, f"undecodable msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(message, dict):
        raise ProtocolError(Code.BAD_MESSAGE, f"a message must be a map, got {type(message).__name__}")
    kind = message.get("type")
    schema = _SCHEMA.get(kind) if isinstance(kind, str) else None
    if schema is None:
        accepted = allowed(MESSAGE_TYPES)
        raise ProtocolError(
            Code.UNKNOWN_TYPE, f"message type {str(kind)[:40]!r} is unknown; accepted: {accepted}"
        )
    for name, (types, required) in schema.items():
        if name not in message:
            if required:
                raise ProtocolError(Code.BAD_MESSAGE, f"{kind} message lacks the field '{name}'")
            continue
        value = message[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = "/".join("nil" if t is _NONE else t.__name__ for t in types)
            raise ProtocolError(
                Code.BAD_MESSAGE, f"{kind}.{name} is a {type(value).__name__}; accepted: {names}"
            )
        if name in _FREE_FORM and value is not None:
            check_plain(value, f"{kind}.{name}")
    return message


def check_plain(value: Any, where: str, depth: int = 0) -> None:
    """Check that a decoded free-form value holds only plain data (str keys, bounded depth)."""
    if depth > MAX_DEPTH:
        raise ProtocolError(Code.BAD_MESSAGE, f"{where} nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ProtocolError(Code.BAD_MESSAGE, f"{where} has a {type(key).__name__} key, not a str")
            check_plain(item, where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_plain(item, where, depth + 1)
    elif not isinstance(value, (_NONE, bool, int, float, str, bytes)):
        raise ProtocolError(Code.BAD_MESSAGE, f"{where} holds a {type(value).__name__}; accepted: plain data")


class FrameDecoder:
    """Incremental frame splitter: feed received bytes, get complete frame bodies back."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Append received bytes; return every complete body, raise ProtocolError on a bad length."""
        buffer = self._buffer
        buffer += data
        bodies = []
        start = 0
        while len(buffer) - start >= 4:
            (length,) = HEADER.unpack_from(buffer, start)
            check_length(length, self.max_bytes)
            end = start + 4 + length
            if len(buffer) < end:
                break
            bodies.append(bytes(buffer[start + 4:end]))
            start = end
        del buffer[:start]
        return bodies


_VERSION = re.compile(r"^(\d{1,4})\.(\d{1,4})$")


def parse_version(version: str) -> tuple[int, int]:
    """Parse "MAJOR.MINOR" into a pair of ints."""
    match = _VERSION.match(version)
    if match is None:
        raise HandshakeError(f"protocol version {version[:40]!r} is not of the form MAJOR.MINOR")
    return int(match.group(1)), int(match.group(2))


def check_version(ours: str, theirs: str, *, us: str, them: str) -> None:
    """Refuse a peer whose major protocol version differs from ours, naming both sides."""
    if parse_version(ours)[0] != parse_version(theirs)[0]:
        raise HandshakeError(
            f"protocol version mismatch: {us} speaks {ours}, {them} speaks {theirs}; "
            f"major versions must match (this {us} accepts {parse_version(ours)[0]}.x)"
        )


def error_message(code: str, message: str) -> dict[str, Any]:
    """Build an ERROR message, trimming the text so an error frame stays small."""
    return {"type": ERROR, "code": code, "message": message[:500]}
