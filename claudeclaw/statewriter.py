"""The daemon's one writer of its state files: the session registry and ``pending.json``.

Run events, resets and accepted messages change state on the event loop; the writes
happen here, off the loop, everything queued at once (a busy daemon would otherwise fsync
once per run event). The two files have a lane each, so a stored answer is never queued
behind a session write. A reply waits for :meth:`StateWriter.join`, so it is seen only once
its session and its stored answer are on disk. A turn's ``touch`` (last used, turn count)
waits ``TOUCH_DELAY_S`` and rides with the next registry write: nothing waits for it. A
failed write (a full disk) is logged and never stops replies; the next batch first writes
everything the daemon knows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from claudeclaw.ledger import PendingLedger
from claudeclaw.logs import get_logger
from claudeclaw.model import SessionKey
from claudeclaw.sessions import SessionRegistry

log = get_logger()

# ("record", key, id), ("touch", key, id), ("workspace", key, json), ("remove", key, ""):
# see SessionRegistry.apply
Change = tuple[str, SessionKey, str]

TOUCH_DELAY_S = 5.0  # a turn's last-used time and count may reach the disk this much later


class StateWriter:
    """The queues of changes and the tasks that apply them (:meth:`run`)."""

    def __init__(
        self,
        registry: SessionRegistry,
        ledger: PendingLedger,
        known: Callable[[], list[Change]],
    ) -> None:
        self.registry = registry
        self.ledger = ledger
        self.known = known  # every change that rewrites what the daemon knows (after a failure)
        self._changes: asyncio.Queue[Change] = asyncio.Queue()
        self._ledger: asyncio.Queue[None] = asyncio.Queue()  # one item per ledger change
        self._touches: list[Change] = []  # waiting for the next registry write
        self._touch_timer: asyncio.TimerHandle | None = None

    def put_nowait(self, change: Change) -> None:
        op, key, _ = change
        if op == "touch":
            self._touches.append(change)
            if self._touch_timer is None:
                loop = asyncio.get_running_loop()
                self._touch_timer = loop.call_later(TOUCH_DELAY_S, self._release_touches)
            return
        if any(touch[1] == key for touch in self._touches):
            self._release_touches()  # a key's changes stay in order (a reset after a turn)
        self._changes.put_nowait(change)

    def ledger_changed(self) -> None:
        """The pending ledger changed: write its snapshot with the next batch."""
        self._ledger.put_nowait(None)

    async def join(self) -> None:
        """Until everything queued so far is written (or its write failed); touches that
        are still waiting are not waited for."""
        await self._changes.join()
        await self._ledger.join()

    async def flush(self) -> None:
        """:meth:`join`, with the waiting touches written too (at a stop; before a read)."""
        self._release_touches()
        await self.join()

    def _release_touches(self) -> None:
        for touch in self._take_touches():
            self._changes.put_nowait(touch)

    async def run(self) -> None:
        """Write both files as changes come, each in its own lane."""
        await asyncio.gather(self._write_registry(), self._write_ledger())

    async def _write_registry(self) -> None:
        """Registry changes in order, everything queued at once (the waiting touches
        ride along)."""
        resync = False
        while True:
            batch = [await self._changes.get()]
            while not self._changes.empty():
                batch.append(self._changes.get_nowait())
            changes = batch + self._take_touches()
            if resync:  # an earlier write failed: write what we know, all of it, first
                changes = self.known() + changes
            try:
                await asyncio.to_thread(self.registry.apply, changes)
                resync = False
            except Exception as exc:  # a full disk must not stop replies (they wait on us)
                log.error("sessions.write_failed", changes=len(batch), error=str(exc))
                resync = True
            finally:
                for _ in batch:
                    self._changes.task_done()

    def _take_touches(self) -> list[Change]:
        touches, self._touches = self._touches, []
        if self._touch_timer is not None:
            self._touch_timer.cancel()
            self._touch_timer = None
        return touches

    async def _write_ledger(self) -> None:
        """The ledger's current snapshot, once for everything changed since the last."""
        while True:
            await self._ledger.get()
            changed = 1
            while not self._ledger.empty():
                self._ledger.get_nowait()
                changed += 1
            try:
                await asyncio.to_thread(self.ledger.write, self.ledger.snapshot())
            except Exception as exc:  # the next change writes it whole again
                log.error("ledger.write_failed", changes=changed, error=str(exc))
            finally:
                for _ in range(changed):
                    self._ledger.task_done()
