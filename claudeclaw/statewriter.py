"""The daemon's one writer of its state files: the session registry and ``pending.json``.

Run events, resets and accepted messages change state on the event loop; the writes
happen here, in order, off the loop, everything queued at once (a busy daemon would
otherwise fsync once per run event). A reply waits for :meth:`StateWriter.join`, so it is
seen only once its session is on disk. A failed write (a full disk) is logged and never
stops replies; the next batch first writes everything the daemon knows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from claudeclaw.ledger import PendingLedger
from claudeclaw.logs import get_logger
from claudeclaw.model import GLOBAL_KEY, SessionKey
from claudeclaw.sessions import SessionRegistry

log = get_logger()

# ("record", key, id), ("touch", key, id), ("workspace", key, json), ("remove", key, ""):
# see SessionRegistry.apply; ("ledger", …) writes the ledger's current snapshot
Change = tuple[str, SessionKey, str]


class StateWriter:
    """Queue of changes and the task that applies them (:meth:`run`)."""

    def __init__(
        self,
        registry: SessionRegistry,
        ledger: PendingLedger,
        known: Callable[[], list[Change]],
    ) -> None:
        self.registry = registry
        self.ledger = ledger
        self.known = known  # every change that rewrites what the daemon knows (after a failure)
        self._queue: asyncio.Queue[Change] = asyncio.Queue()

    def put_nowait(self, change: Change) -> None:
        self._queue.put_nowait(change)

    def ledger_changed(self) -> None:
        """The pending ledger changed: write its snapshot with the next batch."""
        self._queue.put_nowait(("ledger", GLOBAL_KEY, ""))

    async def join(self) -> None:
        """Until everything queued so far is written (or its write failed)."""
        await self._queue.join()

    async def run(self) -> None:
        """Apply changes in order, off the event loop, everything queued at once;
        ``ledger`` entries write the current pending.json snapshot once per batch."""
        resync = False
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            changes = [change for change in batch if change[0] != "ledger"]
            if resync:  # an earlier write failed: write what we know, all of it, first
                changes = self.known() + changes
            snapshot = self.ledger.snapshot() if len(changes) < len(batch) else None
            try:
                # different files: written side by side, so a reply waiting for both (its
                # session's turn and its stored answer) waits for the slower, not the sum
                writes = []
                if changes:
                    writes.append(asyncio.to_thread(self.registry.apply, changes))
                if snapshot is not None:
                    writes.append(asyncio.to_thread(self.ledger.write, snapshot))
                for outcome in await asyncio.gather(*writes, return_exceptions=True):
                    if isinstance(outcome, Exception):
                        raise outcome
                resync = False
            except Exception as exc:  # a full disk must not stop replies (they wait on us)
                log.error("sessions.write_failed", changes=len(batch), error=str(exc))
                resync = True
            finally:
                for _ in batch:
                    self._queue.task_done()
