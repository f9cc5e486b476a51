"""The gossip wire format: round trips, every rejection reason, frame size."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import pytest

from sfhfe_node.errors import ProtocolError
from sfhfe_node.gossip.protocol import (
    MAX_ELEMENTS,
    Ack,
    Error,
    Hello,
    Peers,
    TensorError,
    Weights,
    decode,
    encode,
)
from tests.gossip.host import SPEC

RNG = np.random.default_rng(7)


def _weights() -> Weights:
    params = {
        name: RNG.normal(size=shape).astype(np.float32)
        for name, shape in SPEC["temporal"].items()
    }
    return Weights("node-a", {"temporal": params}, samples=500, version=3)


def _raw_weights(**changes: object) -> dict[str, Any]:
    body = msgpack.unpackb(encode(_weights()), raw=False)
    body.update(changes)
    return body


def _reason(body: object) -> str:
    frame = body if isinstance(body, (bytes, str)) else msgpack.packb(body)
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    return caught.value.reason


def test_hello_round_trip() -> None:
    """A hello decodes to the same identity, embedding, usage and records."""
    vector = np.array([0.5, -1.0], np.float32)
    hello = Hello("node-a", "ws://10.0.0.1:7070", vector, {"geometry": 0.25}, 42)
    back = decode(encode(hello))
    assert isinstance(back, Hello)
    assert back.sender == "node-a" and back.address == "ws://10.0.0.1:7070"
    assert back.usage == {"geometry": 0.25} and back.records == 42
    assert back.embedding.tolist() == [0.5, -1.0]
    assert (back.ts, back.nonce) == (hello.ts, hello.nonce)


def test_weights_round_trip_is_exact() -> None:
    """Every tensor of a weights message comes back bit for bit, with its shape."""
    message = _weights()
    back = decode(encode(message))
    assert isinstance(back, Weights)
    assert (list(back.experts), back.samples, back.version) == (["temporal"], 500, 3)
    for name, value in message.experts["temporal"].items():
        assert back.experts["temporal"][name].dtype == np.float32
        assert np.array_equal(back.experts["temporal"][name], value)


def test_decoded_tensors_are_views_of_the_frame() -> None:
    """Decoded tensors are read-only buffers over the frame bytes, not copies."""
    back = decode(encode(_weights()))
    assert isinstance(back, Weights)
    tensor = back.experts["temporal"]["0.weight"]
    assert not tensor.flags.writeable
    assert isinstance(tensor.base, (bytes, memoryview, np.ndarray))


@pytest.mark.parametrize(
    "message",
    [
        Peers("node-a", ["ws://a:1", "wss://b.example:443/gossip"]),
        Ack("node-a", b"\x01" * 12, False, "not_finite"),
        Error("node-a", "not_msgpack", "frame is not msgpack"),
    ],
)
def test_other_types_round_trip(message: Peers | Ack | Error) -> None:
    """Peers, ack and error messages decode to equal field values."""
    back = decode(encode(message))
    assert type(back) is type(message)
    assert vars(back) == vars(message)


def test_weights_frame_is_close_to_raw_size() -> None:
    """Three ~2,000-parameter experts in one signed frame cost at most 5 % extra."""
    experts = {
        expert: {n: RNG.normal(size=s).astype(np.float32) for n, s in shapes.items()}
        for expert, shapes in SPEC.items()
    }
    raw = sum(v.nbytes for params in experts.values() for v in params.values())
    wire = len(encode(Weights("node-a", experts, 10_000, 12), b"k" * 32))
    assert len(SPEC) == 3 and 1_900 <= raw / 4 / 3 <= 2_200
    assert wire <= 1.05 * raw


def test_several_experts_round_trip_in_one_frame() -> None:
    """A weights frame keeps every expert apart, with its own parameters."""
    experts = {
        "temporal": {"w": np.ones((2, 2), np.float32)},
        "drift": {"w": np.zeros(3, np.float32), "b": np.full(1, 2.0, np.float32)},
    }
    back = decode(encode(Weights("node-a", experts, 5, 1)))
    assert isinstance(back, Weights)
    assert {e: sorted(p) for e, p in back.experts.items()} == {
        "temporal": ["w"], "drift": ["b", "w"]
    }
    assert back.experts["drift"]["b"].tolist() == [2.0]


def test_oversize_frame_is_rejected() -> None:
    """A frame longer than max_size is rejected before it is parsed."""
    with pytest.raises(ProtocolError) as caught:
        decode(encode(_weights()), max_size=1000)
    assert caught.value.reason == "oversize"


def test_text_frame_is_rejected() -> None:
    """A text frame is not a gossip frame."""
    assert _reason("hello") == "not_binary"


@pytest.mark.parametrize("frame", [b"\xc1", b"\x92\x01", b"\x81\xa1v\x01\x00"])
def test_garbage_is_rejected(frame: bytes) -> None:
    """Bytes that are not exactly one msgpack object are rejected."""
    assert _reason(frame) == "not_msgpack"


def test_non_map_is_rejected() -> None:
    """A msgpack list is not a message."""
    assert _reason(msgpack.packb([1, "hello"])) == "not_map"


@pytest.mark.parametrize("version", [1, 3, 0, True, "2", None])
def test_wrong_version_is_rejected(version: object) -> None:
    """Only protocol version 2 is accepted."""
    assert _reason(_raw_weights(v=version)) == "bad_version"


def test_unknown_type_is_rejected() -> None:
    """A type outside the five known ones is rejected."""
    assert _reason(_raw_weights(type="gimme")) == "unknown_type"


def test_missing_field_is_rejected() -> None:
    """A message without one of its fields is rejected."""
    body = _raw_weights()
    del body["samples"]
    assert _reason(body) == "missing_field"


def test_extra_field_is_rejected() -> None:
    """A field the version does not define is rejected."""
    assert _reason(_raw_weights(signature=b"x")) == "unknown_field"


@pytest.mark.parametrize(
    "change",
    [{"samples": 1.5}, {"dtype": 7}, {"nonce": "abc"}, {"experts": {}}, {"ts": True}],
)
def test_wrong_typed_field_is_rejected(change: dict) -> None:
    """A field of the wrong type is rejected."""
    assert _reason(_raw_weights(**change)) == "bad_type"


@pytest.mark.parametrize(
    "change",
    [
        {"nonce": b"short"},
        {"experts": [["Bad Name", [["w", [1], b"\0" * 4]]]]},
        {"ts": math.nan},
        {"from": ""},
        {"samples": -1},
        {"experts": []},
    ],
)
def test_bad_field_value_is_rejected(change: dict) -> None:
    """A field of the right type with a value outside its range is rejected."""
    assert _reason(_raw_weights(**change)) == "bad_value"


def test_non_finite_embedding_is_rejected() -> None:
    """A hello whose embedding holds NaN is rejected."""
    hello = Hello("node-a", None, np.array([np.nan], np.float32), {}, 0)
    assert _reason(encode(hello)) == "bad_value"


def _bad_param(entry: list) -> TensorError:
    body = _raw_weights()
    body["experts"][0][1][0] = entry
    with pytest.raises(TensorError) as caught:
        decode(msgpack.packb(body))
    assert caught.value.sender == "node-a"
    assert caught.value.ref == body["nonce"]
    return caught.value


def test_shape_that_disagrees_with_data_is_a_tensor_error() -> None:
    """A shape whose product is not the data length over 4 is a bad tensor."""
    assert _bad_param(["w", [3, 3], b"\0" * 32]).reason == "bad_tensor"


def test_dtype_other_than_float32_is_a_tensor_error() -> None:
    """Only float32 tensors are accepted."""
    body = _raw_weights(dtype="float64")
    with pytest.raises(TensorError) as caught:
        decode(msgpack.packb(body))
    assert caught.value.reason == "bad_dtype"


def test_too_many_dims_is_a_tensor_error() -> None:
    """A tensor with more than four dimensions is rejected."""
    entry = ["w", [1, 1, 1, 1, 1], b"\0" * 4]
    assert _bad_param(entry).reason == "bad_tensor"


def test_too_many_elements_is_a_tensor_error() -> None:
    """A tensor claiming more elements than the cap is rejected before its bytes."""
    entry = ["w", [MAX_ELEMENTS + 1], b""]
    assert _bad_param(entry).reason == "bad_tensor"


def test_negative_dimension_is_a_tensor_error() -> None:
    """A negative dimension is rejected."""
    assert _bad_param(["w", [-1, -4], b"\0" * 16]).reason == "bad_tensor"


def test_param_with_missing_item_is_rejected() -> None:
    """A parameter entry must have exactly name, shape and data."""
    body = _raw_weights()
    body["experts"][0][1][0] = ["w", [1]]
    assert _reason(body) == "missing_field"


def test_repeated_param_name_is_rejected() -> None:
    """Two parameters with one name are rejected."""
    body = _raw_weights()
    params = body["experts"][0][1]
    params[1][0] = params[0][0]
    assert _reason(body) == "bad_value"


def test_repeated_expert_is_rejected() -> None:
    """Two entries for one expert are rejected."""
    body = _raw_weights()
    body["experts"].append(body["experts"][0])
    assert _reason(body) == "bad_value"
