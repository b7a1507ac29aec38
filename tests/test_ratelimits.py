"""discord.py's rate-limit buckets: the sweep of idle ones runs now and then, not on each
new bucket (claudeclaw/frontend/ratelimits.py), against discord.py's own HTTPClient."""

from __future__ import annotations

import asyncio

import discord
import pytest

from claudeclaw.frontend import ratelimits

BUCKETS = 300  # past discord.py's 256, where it starts sweeping


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many buckets each sweep looked at (discord.py asks each one is_inactive)."""
    looked: list[int] = [0]
    is_inactive = discord.http.Ratelimit.is_inactive

    def counted(self: discord.http.Ratelimit) -> bool:
        looked[0] += 1
        return is_inactive(self)

    monkeypatch.setattr(discord.http.Ratelimit, "is_inactive", counted)
    return looked


async def test_discord_py_scans_every_bucket_for_each_new_one_past_256(scans: list[int]) -> None:
    """What the throttle is for (if discord.py stops doing this, the module can go)."""
    http = discord.http.HTTPClient(asyncio.get_running_loop())
    for i in range(BUCKETS):
        http.get_ratelimit(f"route:{i}")
    assert scans[0] > (BUCKETS - 256) * 256  # a full scan per new bucket past 256


async def test_new_buckets_past_256_do_not_each_scan_them_all(scans: list[int]) -> None:
    http = discord.http.HTTPClient(asyncio.get_running_loop())
    clock = Clock()
    assert ratelimits.install(http, every_s=30.0, clock=clock)
    assert ratelimits.install(http, every_s=30.0, clock=clock)  # idempotent
    for i in range(BUCKETS):
        http.get_ratelimit(f"route:{i}")
    assert scans[0] == 0  # the first sweep ran at 1 bucket; none since, within 30 s
    assert len(http._buckets) == BUCKETS
    # later: one sweep, of all of them, for the next new bucket
    clock.now += 31
    http.get_ratelimit("route:late")
    assert scans[0] == BUCKETS + 1
    http.get_ratelimit("route:later")
    assert scans[0] == BUCKETS + 1


async def test_idle_buckets_are_still_dropped(scans: list[int]) -> None:
    """The sweep drops the same buckets as before (idle five minutes), only less often."""
    loop = asyncio.get_running_loop()
    http = discord.http.HTTPClient(loop)
    clock = Clock()
    ratelimits.install(http, every_s=30.0, clock=clock)
    for i in range(BUCKETS):
        http.get_ratelimit(f"route:{i}")
    busy = http.get_ratelimit("route:0")
    for bucket in http._buckets.values():
        if bucket is not busy:
            bucket._last_request = loop.time() - 301  # idle past discord.py's 300 s
    clock.now += 31
    http.get_ratelimit("route:new")
    assert set(http._buckets) == {"route:0", "route:new"}
