"""Values on the testbed's wire: numpy arrays (a dtype whitelist, little-endian bytes), plain values, gym spaces.

Arrays travel as ``[dtype, shape, little-endian bytes]``; nothing is ever pickled, so decoding
what a peer sent can at worst raise a typed :class:`ProtocolError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from sim2real.errors import allowed
from sim2real.testbed.protocol import MAX_DEPTH, MAX_FRAME_BYTES, Code, ProtocolError, TestbedError

ALLOWED_DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")
_DTYPES = allowed(ALLOWED_DTYPES)
_NATIVE_OF = {name: np.dtype(name) for name in ALLOWED_DTYPES}
_NAME_OF = {dtype: name for name, dtype in _NATIVE_OF.items()}
_WIRE_OF = {name: np.dtype("u1" if name == "bool" else name).newbyteorder("<") for name in ALLOWED_DTYPES}
MAX_NDIM = 8


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
