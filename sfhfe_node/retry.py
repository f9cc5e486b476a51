"""Retry pieces shared by the coordinator link and the gossip links.

A retry policy is two separate things: :func:`backoff_delays`, an endless
generator of delays (exponential, capped, with full jitter), and
:func:`is_retryable`, which decides whether an error is worth another try.
Callers restart the generator after a success.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import aiohttp

__all__ = ["backoff_delays", "is_retryable"]


def backoff_delays(
    initial: float = 0.5,
    factor: float = 2.0,
    cap: float = 30.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield delays in seconds: ``initial * factor**n`` capped at ``cap``.

    Each delay is drawn uniformly from [half the step, the step] so that many
    nodes restarted together do not retry in lockstep.
    """
    if initial <= 0 or factor < 1 or cap < initial:
        raise ValueError(
            f"backoff needs initial > 0, factor >= 1, cap >= initial; got "
            f"initial={initial}, factor={factor}, cap={cap}"
        )
    rng = rng or random.Random()
    step = initial
    while True:
        yield rng.uniform(step / 2, step)
        step = min(step * factor, cap)


def is_retryable(error: BaseException) -> bool:
    """Tell whether an upload or connection error may succeed on a later try.

    Connection failures, time-outs and server-side (5xx) or throttling (429)
    replies are retryable; a 4xx reply means the request itself is wrong and
    sending it again cannot help.
    """
    if isinstance(error, aiohttp.ClientResponseError):
        return error.status >= 500 or error.status in (408, 429)
    return isinstance(
        error, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, OSError)
    )
