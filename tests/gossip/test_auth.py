"""Frame authentication: MAC checks, freshness and replay, without sockets."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from sfhfe_node.errors import ConfigError, ProtocolError
from sfhfe_node.gossip.auth import ReplayGuard, check_key, frame_mac
from sfhfe_node.gossip.protocol import Ack, Hello, Weights, decode, encode

KEY = b"k" * 32
OTHER = b"o" * 32


def _reason(frame: bytes, key: bytes | None) -> str:
    with pytest.raises(ProtocolError) as caught:
        decode(frame, key=key)
    return caught.value.reason


def _weights() -> Weights:
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    return Weights("node-a", {"temporal": params}, samples=10, version=1)


def test_signed_frame_round_trips() -> None:
    """A frame signed with the cluster key decodes under the same key."""
    message = _weights()
    back = decode(encode(message, KEY), key=KEY)
    assert isinstance(back, Weights) and back.nonce == message.nonce
    assert np.array_equal(
        back.experts["temporal"]["w"], message.experts["temporal"]["w"]
    )


def test_signature_costs_33_bytes() -> None:
    """Signing adds the 32-byte MAC and its 1-byte length over an unsigned frame."""
    message = _weights()
    assert len(encode(message, KEY)) - len(encode(message)) == 33


def test_tampered_frame_fails_the_mac() -> None:
    """Changing one byte of a signed frame is caught by the MAC."""
    frame = bytearray(encode(_weights(), KEY))
    frame[-40] ^= 0x01
    assert _reason(bytes(frame), KEY) == "bad_mac"


def test_frame_signed_with_another_key_fails() -> None:
    """A frame signed under another key is refused."""
    assert _reason(encode(_weights(), OTHER), KEY) == "bad_mac"


def test_unsigned_frame_is_refused_when_a_key_is_set() -> None:
    """A node with a cluster key refuses frames without a MAC."""
    assert _reason(encode(_weights()), KEY) == "bad_mac"


def test_signed_frame_is_refused_without_a_key() -> None:
    """A node without a key refuses signed frames: mixed settings fail loudly."""
    assert _reason(encode(_weights(), KEY), None) == "bad_mac"


def test_mac_moved_away_from_the_end_is_refused() -> None:
    """A valid MAC placed before other fields no longer covers the frame."""
    body = msgpack.unpackb(encode(_weights(), KEY))
    mac = body.pop("mac")
    frame = msgpack.packb({"mac": mac, **body})
    assert _reason(frame, KEY) == "bad_mac"


def test_mac_covers_timestamp_and_nonce() -> None:
    """Re-stamping a signed frame with a new time breaks its MAC."""
    body = msgpack.unpackb(encode(Ack("node-a", b"\0" * 12, True, "ok"), KEY))
    body["ts"] += 1.0
    assert _reason(msgpack.packb(body), KEY) == "bad_mac"


def test_frame_mac_ignores_the_mac_slot() -> None:
    """The MAC is computed with its own 32 bytes taken as zeros."""
    frame = encode(Hello("node-a", None, np.ones(2, np.float32), {}, 0), KEY)
    assert frame_mac(KEY, frame) == frame[-32:]
    assert frame_mac(KEY, frame[:-32] + b"\xff" * 32) == frame[-32:]


def test_short_key_is_refused() -> None:
    """A cluster key under 16 bytes is a configuration error."""
    with pytest.raises(ConfigError):
        check_key(b"short")


def test_replayed_nonce_is_refused() -> None:
    """The same nonce twice within the window is a replay."""
    guard = ReplayGuard(window=60.0)
    guard.check(b"n" * 12, ts=1000.0, now=1000.0)
    with pytest.raises(ProtocolError) as caught:
        guard.check(b"n" * 12, ts=1000.0, now=1001.0)
    assert caught.value.reason == "replay"


@pytest.mark.parametrize("ts", [900.0, 1100.0])
def test_timestamp_outside_the_window_is_stale(ts: float) -> None:
    """A frame more than the window away from the receiver's clock is stale."""
    guard = ReplayGuard(window=60.0)
    with pytest.raises(ProtocolError) as caught:
        guard.check(b"n" * 12, ts=ts, now=1000.0)
    assert caught.value.reason == "stale"


def test_old_nonces_are_forgotten() -> None:
    """Nonces older than twice the window are dropped from memory."""
    guard = ReplayGuard(window=10.0)
    for i in range(5):
        guard.check(bytes([i]) * 12, ts=0.0, now=0.0)
    guard.check(b"z" * 12, ts=30.0, now=30.0)
    assert len(guard) == 1


def test_full_guard_refuses_what_it_can_no_longer_check() -> None:
    """Past max_nonces, frames as old as a forgotten nonce are refused as stale."""
    guard = ReplayGuard(window=10.0, max_nonces=2)
    for i in range(3):
        guard.check(bytes([i]) * 12, ts=100.0, now=100.0)
    with pytest.raises(ProtocolError) as caught:
        guard.check(b"\0" * 12, ts=100.0, now=100.0)
    assert caught.value.reason == "stale" and len(guard) == 2
