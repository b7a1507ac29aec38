"""frontend/keeper.py: the backoff, and what is fatal (issue 12.2)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from claudeclaw.errors import DiscordLoginRejected
from claudeclaw.frontend.keeper import DiscordKeeper, retry_delay


def test_retry_delay_doubles_up_to_the_cap() -> None:
    delays = [retry_delay(n, 2.0, 300.0) for n in range(1, 12)]
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0]
    assert max(delays) == 300.0 and delays[-1] == 300.0


class _Frontend:
    """Logs in (``outcome`` None: then ready until closed) or raises ``outcome``."""

    def __init__(self, outcome: BaseException | None) -> None:
        self.outcome = outcome
        self.closed = asyncio.Event()

    async def start(self) -> None:
        if self.outcome is not None:
            raise self.outcome

    async def wait_ready(self) -> None:
        return None

    async def wait_closed(self) -> None:
        await self.closed.wait()

    async def close(self) -> None:
        self.closed.set()


async def test_unreachable_then_back_and_a_lost_client_is_replaced() -> None:
    outcomes: list[BaseException | None] = [OSError("refused"), OSError("refused"), None, None]
    made: list[_Frontend] = []
    ready: list[Any] = []
    changed = asyncio.Event()

    def make() -> _Frontend:
        made.append(_Frontend(outcomes.pop(0)))
        return made[-1]

    async def on_ready(frontend: Any) -> None:
        ready.append(frontend)
        changed.set()

    keeper = DiscordKeeper(
        make,
        on_ready=on_ready,
        on_lost=lambda: None,
        on_fatal=lambda exc: pytest.fail(f"not fatal: {exc}"),
        on_change=lambda: None,
        first_retry=0.01,
        max_retry=0.02,
    )
    await keeper.start(wait=5)  # the first attempt failed: start returns anyway
    assert keeper.failures >= 1 and "retry in" in keeper.status()
    await asyncio.wait_for(changed.wait(), 5)
    assert ready == [made[2]] and keeper.failures == 0
    changed.clear()
    await made[2].close()  # the client stops for good: a new one connects
    await asyncio.wait_for(changed.wait(), 5)
    assert ready == [made[2], made[3]]
    await keeper.stop()
    assert not keeper.active


async def test_a_refusal_is_raised_at_start_and_reported_later() -> None:
    refusal = DiscordLoginRejected("rejected the token")

    def never_fatal(exc: DiscordLoginRejected) -> None:
        pytest.fail("start() should raise it")

    async def no_ready(_frontend: Any) -> None:
        return None

    keeper = DiscordKeeper(
        lambda: _Frontend(refusal),
        on_ready=no_ready,
        on_lost=lambda: None,
        on_fatal=never_fatal,
        on_change=lambda: None,
    )
    with pytest.raises(DiscordLoginRejected):
        await keeper.start(wait=5)

    # after an unreachable first attempt, a refusal goes to on_fatal
    outcomes: list[BaseException | None] = [OSError("down"), refusal]
    fatal: asyncio.Future[DiscordLoginRejected] = asyncio.get_running_loop().create_future()
    keeper = DiscordKeeper(
        lambda: _Frontend(outcomes.pop(0)),
        on_ready=no_ready,
        on_lost=lambda: None,
        on_fatal=fatal.set_result,
        on_change=lambda: None,
        first_retry=0.01,
    )
    await keeper.start(wait=5)
    assert await asyncio.wait_for(fatal, 5) is refusal
