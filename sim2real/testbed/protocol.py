"""Testbed wire protocol: length-prefixed msgpack frames, typed messages, arrays, spaces, versions.

A frame is a u32 big-endian length (1 .. ``MAX_FRAME_BYTES``) followed by that many bytes of one
msgpack map with a ``"type"`` key (on an authenticated link, after the handshake, followed by a
``TAG_BYTES`` tag: see ``sim2real.testbed.auth``). Arrays travel as ``[dtype, shape, little-endian bytes]`` with a
dtype whitelist; nothing is ever pickled, and unpacking runs with strict size limits, so a peer can
at worst get a typed error back, never run code or exhaust memory.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np

from sim2real.errors import Sim2RealError, allowed

PROTOCOL_VERSION = "2.0"
MAX_FRAME_BYTES = 1 << 20
TAG_BYTES = 16
NONCE_BYTES = 32
HEADER = struct.Struct(">I")
ALLOWED_DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")
_DTYPES = allowed(ALLOWED_DTYPES)
_NATIVE_OF = {name: np.dtype(name) for name in ALLOWED_DTYPES}
_NAME_OF = {dtype: name for name, dtype in _NATIVE_OF.items()}
_WIRE_OF = {name: np.dtype("u1" if name == "bool" else name).newbyteorder("<") for name in ALLOWED_DTYPES}
MAX_NDIM = 8
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


def encode_array(array: np.ndarray) -> list[Any]:
    """Encode an array as [dtype, shape, little-endian bytes]; only whitelisted dtypes."""
    name = _NAME_OF.get(array.dtype)
    if name is None:
        little = array.dtype.newbyteorder("<")
        name = _NAME_OF.get(little)
        if name is None:
            raise TestbedError(f"array dtype {array.dtype.name} cannot be sent; accepted: {_DTYPES}")
        array = array.astype(little)
    return [name, list(array.shape), array.tobytes()]


def decode_array(value: Any) -> np.ndarray:
    """Decode [dtype, shape, bytes] into a fresh writable array, validating every part."""
    if not (isinstance(value, list) and len(value) == 3):
        raise ProtocolError(Code.BAD_ARRAY, "an array must be [dtype, shape, bytes]")
    name, shape, data = value
    if not isinstance(name, str) or name not in ALLOWED_DTYPES:
        raise ProtocolError(Code.BAD_ARRAY, f"dtype {str(name)[:40]!r} is not accepted; accepted: {_DTYPES}")
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(_is_int(n) and n >= 0 for n in shape)):
        raise ProtocolError(
            Code.BAD_ARRAY, f"shape {str(shape)[:60]} is not a list of <= {MAX_NDIM} sizes >= 0"
        )
    if math.prod(max(n, 1) for n in shape) > MAX_FRAME_BYTES:
        raise ProtocolError(Code.BAD_ARRAY, f"shape {str(shape)[:60]} is larger than a frame can carry")
    if not isinstance(data, bytes):
        raise ProtocolError(Code.BAD_ARRAY, f"array data is a {type(data).__name__}; accepted: bytes")
    wire = _WIRE_OF[name]
    expected = math.prod(shape) * wire.itemsize
    if expected != len(data):
        raise ProtocolError(
            Code.BAD_ARRAY, f"{len(data)} bytes given, shape {shape} of {name} needs {expected}"
        )
    return np.frombuffer(data, dtype=wire).reshape(shape).astype(_NATIVE_OF[name])


def encode_value(value: Any) -> Any:
    """Encode an observation or action: arrays as [dtype, shape, bytes], scalars as numbers."""
    if isinstance(value, np.ndarray):
        return encode_array(value)
    if isinstance(value, (bool, np.bool_)):
        return encode_array(np.asarray(value))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise TestbedError(f"cannot send a {type(value).__name__}; accepted: numpy arrays, ints, floats")


def decode_value(value: Any) -> np.ndarray | int | float:
    """Decode an observation or action encoded by :func:`encode_value`."""
    if isinstance(value, list):
        return decode_array(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise ProtocolError(Code.BAD_MESSAGE, f"a {type(value).__name__} is not an array or a number")


def safe_info(info: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """Keep the msgpack-safe part of an info dict: plain data, numpy scalars and small arrays as lists.

    Values of other types (objects, large arrays) are dropped rather than pickled or stringified.
    """
    out: dict[str, Any] = {}
    for key, value in info.items():
        plain = _plain(value, depth + 1)
        if plain is not _DROP:
            out[str(key)] = plain
    return out


_DROP = object()


def _plain(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        return _DROP
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else _DROP
    if isinstance(value, float):
        return value
    if isinstance(value, np.generic):
        return _plain(value.item(), depth)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), depth) if value.size <= 4096 else _DROP
    if isinstance(value, Mapping):
        return safe_info(value, depth)
    if isinstance(value, (list, tuple)):
        items = [_plain(v, depth + 1) for v in value]
        return [v for v in items if v is not _DROP]
    return _DROP


def encode_space(space: gym.Space) -> dict[str, Any]:
    """Describe a Box or Discrete space as a plain map for the handshake."""
    if isinstance(space, gym.spaces.Box):
        return {
            "kind": "box",
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
            "low": encode_array(space.low),
            "high": encode_array(space.high),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"kind": "discrete", "n": int(space.n), "start": int(space.start)}
    raise TestbedError(f"space {space!r} cannot cross the testbed; accepted: Box, Discrete")


def decode_space(value: Mapping[str, Any]) -> gym.Space:
    """Rebuild a space from :func:`encode_space` output, validating every field."""
    kind = value.get("kind")
    if kind == "box":
        return _decode_box(value)
    if kind == "discrete":
        n, start = value.get("n"), value.get("start")
        if not (_is_int(n) and _is_int(start) and n > 0):
            raise ProtocolError(
                Code.BAD_MESSAGE, f"Discrete needs int n > 0 and int start, got {n!r}, {start!r}"
            )
        return gym.spaces.Discrete(n, start=start)
    raise ProtocolError(
        Code.BAD_MESSAGE, f"space kind {str(kind)[:40]!r} is unknown; accepted: box, discrete"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_box(value: Mapping[str, Any]) -> gym.spaces.Box:
    shape, dtype = value.get("shape"), value.get("dtype")
    if not (isinstance(shape, list) and all(_is_int(n) and n >= 0 for n in shape)):
        raise ProtocolError(Code.BAD_MESSAGE, f"Box shape {str(shape)[:60]} is not a list of sizes >= 0")
    if dtype not in ALLOWED_DTYPES:
        raise ProtocolError(
            Code.BAD_MESSAGE, f"Box dtype {str(dtype)[:40]!r} is not accepted; accepted: {_DTYPES}"
        )
    low, high = decode_array(value.get("low")), decode_array(value.get("high"))
    if low.shape != tuple(shape) or high.shape != tuple(shape) or not np.all(low <= high):
        raise ProtocolError(Code.BAD_MESSAGE, f"Box bounds do not have shape {shape} with low <= high")
    return gym.spaces.Box(low=low.astype(dtype), high=high.astype(dtype), shape=tuple(shape), dtype=dtype)


def spaces_match(a: gym.Space, b: gym.Space) -> bool:
    """True when two spaces are the same: same kind, shape, dtype and exactly equal bounds."""
    if type(a) is not type(b):
        return False
    if isinstance(a, gym.spaces.Box):
        return (
            a.shape == b.shape
            and a.dtype == b.dtype
            and np.array_equal(a.low, b.low)
            and np.array_equal(a.high, b.high)
        )
    return bool(a == b)


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
