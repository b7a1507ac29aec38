"""Keeping the Discord frontend connected, from the daemon's start on, for as long as it runs.

Discord being unreachable (DNS failure, refused connection, an outage, a 5xx, a network
blip during a restart) is not a reason to exit: systemd would give up after a few fast
restarts and the bot would stay down. The keeper tries at once, then again after a
capped exponential backoff, forever, while the daemon keeps serving its local control
socket. Once connected, discord.py reconnects by itself; if its client stops for good,
the keeper starts over. Only Discord's own refusals are final: a rejected token (401,
gateway 4004) or a refused privileged intent (4014), :class:`DiscordLoginRejected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from claudeclaw.errors import DiscordLoginRejected
from claudeclaw.logs import get_logger

log = get_logger(component="discord")

FIRST_RETRY_SECONDS = 2.0
MAX_RETRY_SECONDS = 300.0


def retry_delay(failures: int, first: float, cap: float) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row: 2, 4, 8, … up to cap."""
    return float(min(cap, first * 2 ** max(0, failures - 1)))


class DiscordKeeper:
    """Runs connection attempts in one background task (see the module docstring).

    ``make`` builds a fresh frontend per attempt; ``on_ready`` receives it once Discord
    said READY; ``on_lost`` is called when a connected frontend stopped for good (before a
    new attempt); ``on_fatal`` gets a refusal found after :meth:`start` returned;
    ``on_change`` is told whenever :meth:`status` changes.
    """

    def __init__(
        self,
        make: Callable[[], Any],
        *,
        on_ready: Callable[[Any], Awaitable[None]],
        on_lost: Callable[[], None],
        on_fatal: Callable[[DiscordLoginRejected], None],
        on_change: Callable[[], None],
        first_retry: float = FIRST_RETRY_SECONDS,
        max_retry: float = MAX_RETRY_SECONDS,
    ) -> None:
        self._make = make
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._on_fatal = on_fatal
        self._on_change = on_change
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.failures = 0
        self.retry_at: float | None = None  # monotonic time of the next attempt
        self.connected = False
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    def status(self) -> str:
        """The Discord part of systemd's STATUS= while not connected."""
        if self.retry_at is None:
            return "discord: connecting"
        seconds = max(0, round(self.retry_at - time.monotonic()))
        return f"discord: connecting, retry in {seconds} s"

    async def start(self, wait: float) -> None:
        """Begin; wait up to ``wait`` s for the first attempt to connect or fail.

        Raises :class:`DiscordLoginRejected` when that first attempt was refused; any
        other outcome (connected, unreachable, still trying) returns.
        """
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._task = loop.create_task(self._run(), name="discord-keeper")
        await asyncio.wait({self._first}, timeout=wait)
        if self._first.done() and self._first.exception() is not None:
            await self.stop()
            raise self._first.exception()  # type: ignore[misc]

    async def stop(self) -> None:
        """Stop trying (a connected frontend stays; its owner drains and closes it)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.retry_at = None

    def _settle(self, error: DiscordLoginRejected | None = None) -> bool:
        """Report the first attempt's outcome to :meth:`start`; False if already told."""
        first = self._first
        if first is None or first.done():
            return False
        if error is None:
            first.set_result(None)
        else:
            first.set_exception(error)
        return True

    async def _run(self) -> None:
        while True:
            frontend = self._make()
            handed_over = False
            try:
                await frontend.start()  # log in: REST
                await frontend.wait_ready()  # the gateway's READY
                self.failures = 0
                self.retry_at = None
                self.connected = True
                handed_over = True
                await self._on_ready(frontend)
                self._settle()
                self._on_change()
                await frontend.wait_closed()
                error: BaseException | None = None
            except DiscordLoginRejected as exc:
                if not handed_over:
                    await frontend.close()
                if not self._settle(exc):
                    self._on_fatal(exc)
                return
            except asyncio.CancelledError:
                if not handed_over:
                    await frontend.close()
                raise
            except Exception as exc:  # unreachable, outage, 5xx, timeouts: try again
                error = exc
            if handed_over:
                self.connected = False
                log.error(
                    "discord.client_stopped",
                    error=_describe(error) if error else "closed",
                    hint="connecting again",
                )
                self._on_lost()
            await frontend.close()
            self.failures += 1
            delay = retry_delay(self.failures, self.first_retry, self.max_retry)
            self.retry_at = time.monotonic() + delay
            if not handed_over:
                log.warning(
                    "discord.unreachable",
                    error=_describe(error),
                    attempt=self.failures,
                    retry_in_s=round(delay, 1),
                    hint="serving the local control socket meanwhile; retrying until "
                    "Discord answers",
                )
            self._settle()  # the daemon goes on without Discord for now
            self._on_change()
            await asyncio.sleep(delay)
            self.retry_at = None
            self._on_change()


def _describe(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
