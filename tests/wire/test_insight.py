"""The insight schema accepts what clients send and refuses everything else."""

from __future__ import annotations

import copy
import json

import msgpack
import pytest

from sfhfe_node.errors import InsightError
from sfhfe_node.wire.insight import decode_body, validate_insight, validate_meta

VALID = {
    "schema": 1,
    "node_id": "node-1",
    "seq": 4,
    "time": 1764000000.5,
    "task": "classification",
    "records": 640,
    "window": {"records": 320, "loss": 0.41, "accuracy": 0.83},
    "experts": {
        "linear": {"lr": 0.01, "loss_start": 0.6, "loss_end": 0.4, "usage": 0.5,
                   "samples": 300},
    },
    "drift": {"events": 1, "active": False},
    "memory_bytes": 123456,
    "embedding": [0.1, -0.2, 0.3],
    "gossip": "ws://127.0.0.1:7070",
}


def changed(path: str, value: object) -> dict:
    insight = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    target = insight
    for name in parents:
        target = target[name]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return insight


def test_valid_insight_round_trips() -> None:
    """A valid insight comes back equal to what was sent."""
    assert validate_insight(copy.deepcopy(VALID)) == VALID


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("seq", "4", "bad_type"),
        ("seq", True, "bad_type"),
        ("seq", -1, "out_of_range"),
        ("node_id", "bad id!", "bad_value"),
        ("task", "poetry", "bad_value"),
        ("window.loss", float("nan"), "not_finite"),
        ("window.loss", float("inf"), "not_finite"),
        ("window.accuracy", 1.5, "out_of_range"),
        ("experts.linear.lr", 0.0, "out_of_range"),
        ("embedding", [0.0] * 65, "too_large"),
        ("embedding", "0.1", "bad_type"),
        ("gossip", "http://x", "bad_value"),
        ("drift.active", 1, "bad_type"),
        ("records", KeyError, "missing_field"),
        ("extra", 1, "unknown_field"),
        ("schema", 2, "bad_schema"),
    ],
)
def test_bad_field_is_rejected_with_reason(path: str, value: object, reason: str) -> None:
    """Each kind of bad field is refused with its own reason token."""
    with pytest.raises(InsightError) as caught:
        validate_insight(changed(path, value))
    assert caught.value.reason == reason


def test_too_many_experts_is_rejected() -> None:
    """An experts map over the size limit is refused."""
    experts = {f"e{i}": VALID["experts"]["linear"] for i in range(33)}
    with pytest.raises(InsightError) as caught:
        validate_insight(changed("experts", experts))
    assert caught.value.reason == "too_large"


def test_json_and_msgpack_bodies_decode_alike() -> None:
    """The same insight decodes identically from JSON and msgpack."""
    as_json = decode_body(json.dumps(VALID).encode(), "application/json; charset=utf-8")
    as_msgpack = decode_body(msgpack.packb(VALID), "application/msgpack")
    assert as_json == as_msgpack == VALID


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, NaN]", "application/json"),
        (b"[1e999]", "application/json"),
        (b"[" * 100_000, "application/json"),
        (b"\xc1", "application/msgpack"),
        (b"\x91" * 100_000 + b"\x01", "application/msgpack"),
        (b"\x92\x01", "application/msgpack"),
        (b"\xff\xfe", "application/json"),
    ],
)
def test_broken_body_is_a_bad_encoding(body: bytes, content_type: str) -> None:
    """Unparsable, truncated or absurdly nested bodies are refused, not crashed on."""
    with pytest.raises(InsightError) as caught:
        decode_body(body, content_type)
    assert caught.value.reason in ("bad_encoding", "not_finite")


def test_other_media_type_is_refused() -> None:
    """Only JSON and msgpack bodies are accepted."""
    with pytest.raises(InsightError) as caught:
        decode_body(b"x", "text/plain")
    assert caught.value.reason == "unsupported_media_type"


def test_meta_document_is_checked() -> None:
    """A meta document with a non-positive rate is refused."""
    good = {"version": 3, "learning_rates": {"mlp": 0.01}, "router_priors": {"mlp": 0.5}}
    assert validate_meta(good) == good
    with pytest.raises(InsightError):
        validate_meta({**good, "learning_rates": {"mlp": -1.0}})


PEER_MODELS = {"weight": 0.25, "peers": 3, "helped": 40, "hurt": 12}


def test_peer_models_field_is_optional_and_kept() -> None:
    """An insight may carry the peers' models' figures; they come back equal."""
    insight = {**copy.deepcopy(VALID), "peer_models": dict(PEER_MODELS)}
    assert validate_insight(insight) == insight
    assert "peer_models" not in validate_insight(copy.deepcopy(VALID))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("weight", 1.5, "out_of_range"),
        ("weight", float("nan"), "not_finite"),
        ("peers", 5000, "out_of_range"),
        ("helped", -1, "out_of_range"),
        ("hurt", "12", "bad_type"),
    ],
)
def test_bad_peer_models_field_is_rejected(
    field: str, value: object, reason: str
) -> None:
    """Each figure of ``peer_models`` is range- and type-checked."""
    insight = {**copy.deepcopy(VALID), "peer_models": {**PEER_MODELS, field: value}}
    with pytest.raises(InsightError) as caught:
        validate_insight(insight)
    assert caught.value.reason == reason


def test_peer_models_field_must_be_complete() -> None:
    """A ``peer_models`` map lacking a figure or adding one is refused."""
    short = {**copy.deepcopy(VALID), "peer_models": {"weight": 0.1}}
    extra = {**copy.deepcopy(VALID), "peer_models": {**PEER_MODELS, "x": 1}}
    with pytest.raises(InsightError, match="lacks"):
        validate_insight(short)
    with pytest.raises(InsightError, match="unknown"):
        validate_insight(extra)
