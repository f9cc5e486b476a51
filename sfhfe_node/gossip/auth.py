"""Frame authentication: an HMAC over every frame, freshness and replay checks.

Free of I/O and clocks: callers pass the cluster key and the time in.

A signed frame is the msgpack map of a message whose last entry is
``"mac": <32 bytes>``; msgpack writes those 32 bytes at the very end of the
frame. The MAC is HMAC-SHA256 under the cluster key over the whole frame with
those last 32 bytes set to zero, so it covers every field, the timestamp and
the nonce included. A receiver checks the MAC on the bytes it received before
it trusts any field, then asks a :class:`ReplayGuard` whether the timestamp is
fresh and the nonce new.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import OrderedDict

from sfhfe_node.errors import ConfigError, ProtocolError

__all__ = [
    "MAC_BYTES",
    "MIN_KEY_BYTES",
    "ReplayGuard",
    "check_key",
    "frame_mac",
    "verify_frame",
]

MAC_BYTES = 32
MIN_KEY_BYTES = 16
_ZEROS = bytes(MAC_BYTES)


def check_key(key: bytes) -> bytes:
    """Return ``key`` if it can serve as a cluster key, else raise ConfigError.

    A key is at least 16 bytes; a longer random key (32 bytes from
    ``os.urandom``, or a long passphrase) is better.
    """
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        raise ConfigError(
            f"cluster key must be at least {MIN_KEY_BYTES} bytes, got {size}"
        )
    return key


def frame_mac(key: bytes, frame: bytes | memoryview) -> bytes:
    """HMAC-SHA256 of ``frame`` with its last 32 bytes taken as zeros."""
    view = memoryview(frame)
    digest = hmac.new(key, view[:-MAC_BYTES], hashlib.sha256)
    digest.update(_ZEROS)
    return digest.digest()


def verify_frame(key: bytes, frame: bytes | memoryview, mac: bytes) -> None:
    """Raise ``ProtocolError("bad_mac")`` unless ``mac`` signs ``frame``.

    ``mac`` is the value of the frame's ``mac`` field; it must also be the
    frame's last 32 bytes, where the sender wrote it.
    """
    view = memoryview(frame)
    if len(mac) != MAC_BYTES or len(view) < MAC_BYTES or view[-MAC_BYTES:] != mac:
        raise ProtocolError("bad_mac", "frame mac is not at the end of the frame")
    if not hmac.compare_digest(frame_mac(key, view), mac):
        raise ProtocolError("bad_mac", "frame mac does not match the cluster key")


class ReplayGuard:
    """Rejects frames that are too old, from the future, or seen before.

    Parameters
    ----------
    window
        Seconds a frame's timestamp may differ from the receiver's clock
        (default 120.0). It must cover clock skew between machines plus
        network delay; a replay is only possible inside it, and the guard
        remembers every nonce for that long.
    max_nonces
        Most nonces remembered (default 200,000, about 20 MB). When full, the
        oldest are forgotten and the accepted window shrinks to the age of the
        oldest one kept, so a flood can never let a remembered nonce repeat.
    """

    def __init__(self, window: float = 120.0, max_nonces: int = 200_000) -> None:
        if not (math.isfinite(window) and window > 0) or max_nonces < 1:
            raise ConfigError(
                f"replay guard needs window > 0 and max_nonces >= 1; got "
                f"{window} and {max_nonces}"
            )
        self.window = window
        self.max_nonces = max_nonces
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._floor = -math.inf

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, nonce: bytes, ts: float, now: float) -> None:
        """Remember ``nonce`` or raise ``ProtocolError`` (``stale`` or ``replay``)."""
        self._expire(now)
        if abs(now - ts) > self.window:
            raise ProtocolError(
                "stale", f"frame time is {now - ts:+.1f} s off; allowed {self.window}"
            )
        if ts <= self._floor:
            raise ProtocolError(
                "stale", "frame is older than the oldest nonce still remembered"
            )
        if nonce in self._seen:
            raise ProtocolError("replay", f"nonce {nonce.hex()} was seen before")
        self._seen[nonce] = now
        if len(self._seen) > self.max_nonces:
            _, oldest = self._seen.popitem(last=False)
            self._floor = max(self._floor, oldest + self.window)

    def _expire(self, now: float) -> None:
        limit = now - 2 * self.window
        while self._seen:
            nonce, seen = next(iter(self._seen.items()))
            if seen >= limit:
                break
            del self._seen[nonce]
