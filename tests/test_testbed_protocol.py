"""Testbed wire protocol: frames, arrays, messages, spaces and versions, without any network."""

from __future__ import annotations

import random

import gymnasium as gym
import msgpack
import numpy as np
import pytest

from sim2real.testbed import encoding
from sim2real.testbed import protocol as p


@pytest.mark.parametrize("dtype", encoding.ALLOWED_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 5), (1, 2, 3)])
def test_array_round_trip_keeps_dtype_shape_and_values(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = (rng.normal(size=shape) * 100).astype(dtype)
    decoded = encoding.decode_array(msgpack.unpackb(msgpack.packb(encoding.encode_array(array))))
    assert decoded.dtype == np.dtype(dtype) and decoded.shape == shape
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.writeable


def test_array_round_trip_keeps_non_finite_floats_and_big_endian_input() -> None:
    array = np.array([np.nan, np.inf, -np.inf, 1e300], dtype=">f8")
    decoded = encoding.decode_array(encoding.encode_array(array))
    np.testing.assert_array_equal(decoded, array.astype("<f8"))


@pytest.mark.parametrize("dtype", ["float16", "complex64", "object", "<U3", "int8", "uint64"])
def test_encoding_refuses_dtypes_outside_the_whitelist(dtype: str) -> None:
    with pytest.raises(p.TestbedError, match=f"{np.dtype(dtype).name}.*accepted: float32"):
        encoding.encode_array(np.zeros(2, dtype=dtype))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (["object", [1], b"\0" * 8], "dtype 'object' is not accepted"),
        (["<U3", [1], b"\0" * 12], "is not accepted"),
        (["float16", [1], b"\0\0"], "is not accepted"),
        ([7, [1], b"\0" * 4], "is not accepted"),
        (["float32", [3], b"\0" * 8], "8 bytes given"),
        (["float32", [-1], b""], "sizes >= 0"),
        (["float32", [True], b"\0" * 4], "sizes >= 0"),
        (["float32", [1] * 9, b"\0" * 4], "sizes >= 0"),
        (["float32", [0, 2**40, 2**40], b""], "larger than a frame"),
        (["float32", [1], "abcd"], "accepted: bytes"),
        (["float32", [1]], "must be"),
        ("float32", "must be"),
    ],
)
def test_decoding_refuses_bad_arrays(value: object, fragment: str) -> None:
    with pytest.raises(p.ProtocolError, match=fragment) as caught:
        encoding.decode_array(value)
    assert caught.value.code == p.Code.BAD_ARRAY


def test_bool_arrays_decode_to_true_false_whatever_the_bytes() -> None:
    decoded = encoding.decode_array(["bool", [3], b"\x00\x02\xff"])
    assert decoded.dtype == bool and decoded.tolist() == [False, True, True]


def test_frames_round_trip_through_any_chunking() -> None:
    messages = [
        {"type": p.HELLO, "version": p.PROTOCOL_VERSION, "session": None},
        {"type": p.STEP, "episode": 3, "seq": 7, "action": encoding.encode_array(np.arange(2, dtype=np.float32))},
        {"type": p.HEARTBEAT},
        {"type": p.ERROR, "code": p.Code.BUSY, "message": "x" * 5000},
    ]
    stream = b"".join(p.pack_frame(m) for m in messages)
    rng = random.Random(0)
    for _ in range(50):
        decoder, bodies, start = p.FrameDecoder(), [], 0
        while start < len(stream):
            end = start + rng.randint(1, 40)
            bodies += decoder.feed(stream[start:end])
            start = end
        assert [p.unpack_message(b) for b in bodies] == messages
        assert decoder.pending == 0


@pytest.mark.parametrize("length", [0, p.MAX_FRAME_BYTES + 1, 2**32 - 1])
def test_frame_lengths_zero_or_over_the_cap_are_refused(length: int) -> None:
    with pytest.raises(p.ProtocolError, match=f"frame length {length} is outside") as caught:
        p.FrameDecoder().feed(p.HEADER.pack(length) + b"\x80")
    assert caught.value.code == p.Code.BAD_FRAME


def test_sending_an_oversized_message_is_refused() -> None:
    with pytest.raises(p.ProtocolError, match=f"exceeds the {p.MAX_FRAME_BYTES - p.TAG_BYTES}-byte cap"):
        p.pack_frame({"type": p.ERROR, "code": "x", "message": "y" * p.MAX_FRAME_BYTES})


def _nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (b"\xc1", p.Code.BAD_MESSAGE, "undecodable"),
        (b"\x92\x01", p.Code.BAD_MESSAGE, "undecodable"),
        (msgpack.packb({"type": "hello", "version": "1.0"}) + b"\x00", p.Code.BAD_MESSAGE, "undecodable"),
        (msgpack.packb([1, 2]), p.Code.BAD_MESSAGE, "must be a map"),
        (msgpack.packb({1: 2}), p.Code.BAD_MESSAGE, "undecodable"),
        (msgpack.packb({"type": "launch"}), p.Code.UNKNOWN_TYPE, "'launch' is unknown"),
        (msgpack.packb({"type": 5}), p.Code.UNKNOWN_TYPE, "is unknown"),
        (msgpack.packb({"seq": 1}), p.Code.UNKNOWN_TYPE, "is unknown"),
        (msgpack.packb({"type": "step", "episode": 1, "seq": 1}), p.Code.BAD_MESSAGE, "lacks the field 'action'"),
        (msgpack.packb({"type": "step", "episode": "1", "seq": 1, "action": 0}), p.Code.BAD_MESSAGE, "str"),
        (msgpack.packb({"type": "step", "episode": True, "seq": 1, "action": 0}), p.Code.BAD_MESSAGE, "bool"),
        (msgpack.packb({"type": "step", "episode": 1, "seq": 1.5, "action": 0}), p.Code.BAD_MESSAGE, "float"),
        (msgpack.packb({"type": "hello", "version": 1}), p.Code.BAD_MESSAGE, "accepted: str"),
        (msgpack.packb({"type": "reset", "options": {"a": msgpack.ExtType(1, b"x")}}), p.Code.BAD_MESSAGE,
         "undecodable"),
        (msgpack.packb({"type": "reset", "options": {"a": _nested(20)}}), p.Code.BAD_MESSAGE, "nests deeper"),
        (b"\x91" * 5000, p.Code.BAD_MESSAGE, "undecodable"),
    ],
)
def test_bad_messages_are_refused_with_a_typed_error(body: bytes, code: str, fragment: str) -> None:
    with pytest.raises(p.ProtocolError, match=fragment) as caught:
        p.unpack_message(body)
    assert caught.value.code == code


def test_messages_ignore_extra_fields_for_forward_compatibility() -> None:
    body = msgpack.packb({"type": "heartbeat", "added_in_1_1": [1, 2]})
    assert p.unpack_message(body)["type"] == "heartbeat"


def test_safe_info_keeps_plain_data_and_drops_the_rest() -> None:
    info = {
        "a": np.float32(1.5),
        "b": np.arange(3),
        "c": {"d": [np.int64(2), object()]},
        "e": object(),
        "f": np.zeros(10_000),
        "g": (1, "x", None),
        3: True,
    }
    safe = encoding.safe_info(info)
    assert safe == {"a": 1.5, "b": [0, 1, 2], "c": {"d": [2]}, "g": [1, "x", None], "3": True}
    assert p.unpack_message(p.pack_frame({"type": p.RESET_OK, "episode": 1, "obs": 0, "info": safe,
                                          "env_ms": 0.1})[4:])["info"] == safe


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Box(-1.0, 1.0, (21,), np.float32),
        gym.spaces.Box(np.array([-1.0, -np.inf]), np.array([2.0, np.inf]), dtype=np.float64),
        gym.spaces.Box(0, 255, (2, 3), np.uint8),
        gym.spaces.Discrete(4),
        gym.spaces.Discrete(3, start=-1),
        gym.make("Pendulum-v1").observation_space,
        gym.make("Pendulum-v1").action_space,
    ],
)
def test_spaces_round_trip_and_match(space: gym.Space) -> None:
    wire = msgpack.unpackb(msgpack.packb(encoding.encode_space(space)))
    decoded = encoding.decode_space(wire)
    assert encoding.spaces_match(decoded, space)
    assert decoded.dtype == space.dtype


def test_spaces_match_tells_differences_apart() -> None:
    box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    assert not encoding.spaces_match(box, gym.spaces.Box(-1.0, 2.0, (2,), np.float32))
    assert not encoding.spaces_match(box, gym.spaces.Box(-1.0, 1.0, (3,), np.float32))
    assert not encoding.spaces_match(box, gym.spaces.Box(-1.0, 1.0, (2,), np.float64))
    assert not encoding.spaces_match(box, gym.spaces.Discrete(2))
    assert not encoding.spaces_match(gym.spaces.Discrete(2), gym.spaces.Discrete(2, start=1))


def test_unsupported_spaces_are_refused_naming_what_is_accepted() -> None:
    with pytest.raises(p.TestbedError, match="accepted: Box, Discrete"):
        encoding.encode_space(gym.spaces.Dict({"a": gym.spaces.Discrete(2)}))
    with pytest.raises(p.ProtocolError, match="accepted: box, discrete"):
        encoding.decode_space({"kind": "dict"})
    with pytest.raises(p.ProtocolError, match="low <= high"):
        wire = encoding.encode_space(gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
        encoding.decode_space({**wire, "low": wire["high"], "high": wire["low"]})
    with pytest.raises(p.ProtocolError, match="n > 0"):
        encoding.decode_space({"kind": "discrete", "n": 0, "start": 0})


def test_versions_with_the_same_major_are_compatible() -> None:
    p.check_version("1.0", "1.7", us="client", them="server")


def test_a_major_version_mismatch_names_both_sides() -> None:
    with pytest.raises(p.HandshakeError, match=r"client speaks 1\.0, server speaks 2\.3"):
        p.check_version("1.0", "2.3", us="client", them="server")
    with pytest.raises(p.HandshakeError, match=r"MAJOR\.MINOR"):
        p.check_version("1.0", "one", us="client", them="server")
