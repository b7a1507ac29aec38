"""The daemon's one writer of its state files: the session registry and the pending
ledger's journal (``pending.jsonl``).

Run events and resets change sessions on the event loop; the registry writes happen here,
off the loop, everything queued at once (a busy daemon would otherwise fsync once per run
event). A reply waits for :meth:`StateWriter.join`, so it is seen only once its session is
on disk. A turn's ``touch`` (last used, turn count) waits ``TOUCH_DELAY_S`` and rides with
the next registry write: nothing waits for it. A failed write (a full disk) is logged and
never stops replies; the next batch first writes everything the daemon knows.

The ledger appends its own lines as it changes (a crash loses none); its lane here syncs
them to disk, one ``fdatasync`` for everything appended within ``LEDGER_SYNC_DELAY_S``
(group commit), and rewrites the journal when it has grown. Nothing waits for it but a
stop (:meth:`close`).
"""

from __future__ import annotations

import asyncio
import contextlib
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
LEDGER_SYNC_DELAY_S = 0.2  # what a power cut can take of the ledger; a crash takes nothing


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
        self._closing = asyncio.Event()  # a stop: sync the ledger without waiting
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
        """The pending ledger appended a line: sync it with the next batch."""
        self._ledger.put_nowait(None)

    async def join(self) -> None:
        """Until every registry change queued so far is written (or its write failed);
        touches that are still waiting are not waited for."""
        await self._changes.join()

    async def flush(self) -> None:
        """:meth:`join`, with the waiting touches written too (before a read)."""
        self._release_touches()
        await self.join()

    async def close(self) -> None:
        """At a stop: everything written, the ledger synced, its file closed."""
        await self.flush()
        self._closing.set()
        await self._ledger.join()
        try:  # once more: the lane's last sync may have failed (it was logged)
            await asyncio.to_thread(self.ledger.sync_job())
        except Exception as exc:  # the lines are written; only a power cut could take them
            log.error("ledger.sync_failed", changes=0, error=str(exc))
        self.ledger.close()

    def _release_touches(self) -> None:
        for touch in self._take_touches():
            self._changes.put_nowait(touch)

    async def run(self) -> None:
        """Write both files as changes come, each in its own lane."""
        await asyncio.gather(self._write_registry(), self._sync_ledger())

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

    async def _sync_ledger(self) -> None:
        """The ledger's appended lines to disk, one sync for those of the last
        ``LEDGER_SYNC_DELAY_S``; a rewrite instead when the journal has grown."""
        while True:
            await self._ledger.get()
            with contextlib.suppress(TimeoutError):  # (at once when stopping)
                async with asyncio.timeout(LEDGER_SYNC_DELAY_S):
                    await self._closing.wait()
            changed = 1
            while not self._ledger.empty():
                self._ledger.get_nowait()
                changed += 1
            try:
                await asyncio.to_thread(self.ledger.sync_job())
            except Exception as exc:  # the next change tries again (a rewrite, if broken)
                log.error("ledger.sync_failed", changes=changed, error=str(exc))
            finally:
                for _ in range(changed):
                    self._ledger.task_done()
