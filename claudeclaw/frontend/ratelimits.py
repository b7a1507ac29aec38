"""discord.py's rate-limit buckets, swept now and then instead of on every new one.

discord.py keeps a rate-limit bucket per route and channel, and once it holds 256 it scans
all of them for ones idle five minutes each time it makes a new bucket. Every new thread
makes ~5 new buckets (join, reactions, typing, reply), so on a bot whose threads are busy
the scan runs on each of a new thread's requests, and costs more the more threads there
have been: with ~1,000 buckets, ~2 ms of a new thread's CPU (bench/message.py with
``--messages 200``). :func:`install` lets that sweep run at most once per
:data:`SWEEP_EVERY_S`; the buckets it drops, and so the memory they hold, are the same
give or take those seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import discord

SWEEP_EVERY_S = 30.0


def install(
    http: discord.http.HTTPClient,
    every_s: float = SWEEP_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Throttle ``http``'s sweep of idle buckets to once per ``every_s``; False (and
    nothing changed) on a discord.py without that sweep."""
    sweep: Callable[[], None] | None = getattr(http, "_try_clear_expired_ratelimits", None)
    if sweep is None or getattr(sweep, "_claudeclaw_throttled", False):
        return sweep is not None
    next_at = 0.0

    def sweep_now_and_then() -> None:
        nonlocal next_at
        now = clock()
        if now < next_at:
            return
        next_at = now + every_s
        sweep()

    sweep_now_and_then._claudeclaw_throttled = True  # type: ignore[attr-defined]
    http._try_clear_expired_ratelimits = sweep_now_and_then  # type: ignore[method-assign]
    return True
