"""The daemon's one writer of its state files: the session registry, its journal of
changes (``sessions.changes.jsonl``) and the pending ledger's journal (``pending.jsonl``).

Run events and resets change sessions on the event loop. A change that must survive a
crash (a session recorded or removed, a worktree tied to it) is appended to the changes
journal at once, on the loop: one ``write(2)`` of a line, so it is on the way to disk before
the reply that follows it is posted, and a ``kill -9`` right after loses nothing (the next
start folds the journal into the session files: ``SessionRegistry.fold_changes``). The
session files themselves are rewritten here, off the loop, at most every
``REGISTRY_DELAY_S``: everything waiting at once (a rewrite costs a temp file, two fsyncs
and a parse and dump of the whole registry, which grows with every thread; one per new
thread was ~2 ms of CPU on its path), with a turn's ``touch`` (last used, turn count: not
journaled, it may be lost with a crash). Once a rewrite has landed the changes journal is
emptied of what it held. Reads of the files (``flush``) and a stop write at once. A failed
write (a full disk) is logged and never stops replies; the next batch first writes
everything the daemon knows. Without the changes journal (it cannot be appended to) a
change is written at once and a reply waits for it (:meth:`StateWriter.join`), as before.

The ledger appends its own lines as it changes (a crash loses none); its lane here syncs
them to disk with the changes journal's, one ``fdatasync`` each for everything appended
within ``JOURNAL_SYNC_DELAY_S`` (group commit), and rewrites the ledger's journal when it
has grown. Nothing waits for it but a stop (:meth:`close`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from claudeclaw.journal import Journal
from claudeclaw.ledger import PendingLedger
from claudeclaw.logs import get_logger
from claudeclaw.sessions import Change, SessionRegistry, change_record

log = get_logger()

REGISTRY_DELAY_S = 30.0  # the session files are rewritten at most this often (and on a read)
JOURNAL_SYNC_DELAY_S = 0.2  # what a power cut can take of the journals; a crash takes nothing


class StateWriter:
    """The queues of changes and the tasks that apply them (:meth:`run`). ``journal``:
    the session changes journal (None: every change is written at once)."""

    def __init__(
        self,
        registry: SessionRegistry,
        ledger: PendingLedger,
        known: Callable[[], list[Change]],
        journal: Journal | None = None,
    ) -> None:
        self.registry = registry
        self.ledger = ledger
        self.known = known  # every change that rewrites what the daemon knows (after a failure)
        self.journal = journal
        self._to_write: asyncio.Queue[Change] = asyncio.Queue()
        self._to_sync: asyncio.Queue[None] = asyncio.Queue()  # one item per journal append
        self._closing = asyncio.Event()  # a stop: sync the journals without waiting
        self._waiting: list[Change] = []  # for the next registry write, in order
        self._timer: asyncio.TimerHandle | None = None
        self._unsynced = False  # the changes journal has lines not synced yet

    def put_nowait(self, change: Change) -> None:
        if change[0] != "touch" and not self._journaled(change):  # (touches never are)
            self._release()  # a key's changes stay in order (a reset after a turn)
            self._to_write.put_nowait(change)
            return
        self._waiting.append(change)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(REGISTRY_DELAY_S, self._release)

    def _journaled(self, change: Change) -> bool:
        """Append ``change`` to the changes journal; False if there is none or it could
        not be appended (then the change is written at once)."""
        if self.journal is None:
            return False
        try:
            self.journal.append(change_record(*change))
        except OSError as exc:  # a full disk: written now instead, and the reply waits
            log.error("sessions.journal_failed", file=str(self.journal.path), error=str(exc))
            return False
        self._unsynced = True
        self._to_sync.put_nowait(None)
        return True

    def ledger_changed(self) -> None:
        """The pending ledger appended a line: sync it with the next batch."""
        self._to_sync.put_nowait(None)

    async def join(self) -> None:
        """Until every change that was not journaled is written (or its write failed):
        a journaled change is already as safe as the reply that waits on this."""
        await self._to_write.join()

    async def flush(self) -> None:
        """Every change written to the session files (before a read)."""
        self._release()
        await self.join()

    async def close(self) -> None:
        """At a stop: everything written, the journals synced, their files closed."""
        await self.flush()
        self._closing.set()
        await self._to_sync.join()
        try:  # once more: the lane's last sync may have failed (it was logged)
            await asyncio.to_thread(self._sync_job())
        except Exception as exc:  # the lines are written; only a power cut could take them
            log.error("ledger.sync_failed", changes=0, error=str(exc))
        self.ledger.close()
        if self.journal is not None:
            self.journal.close()

    def _release(self) -> None:
        """What waits goes to the writer lane now, in order."""
        for change in self._take_waiting():
            self._to_write.put_nowait(change)

    async def run(self) -> None:
        """Write the files as changes come, each in its own lane."""
        await asyncio.gather(self._write_registry(), self._sync_journals())

    async def _write_registry(self) -> None:
        """Registry changes in order, everything queued or waiting at once; then the
        changes journal keeps only what was appended while they were written."""
        resync = False
        while True:
            batch = [await self._to_write.get()]
            while not self._to_write.empty():
                batch.append(self._to_write.get_nowait())
            changes = batch + self._take_waiting()
            if resync:  # an earlier write failed: write what we know, all of it, first
                changes = self.known() + changes
            journal = self.journal
            if journal is None or not journal.holds_lines() or not journal.begin_rewrite():
                journal = None  # nothing in it to drop once the files are written
            try:
                await asyncio.to_thread(self._write, changes, journal)
                resync = False
            except Exception as exc:  # a full disk must not stop replies (they wait on us)
                log.error("sessions.write_failed", changes=len(changes), error=str(exc))
                resync = True
            finally:
                for _ in batch:
                    self._to_write.task_done()

    def _write(self, changes: list[Change], journal: Journal | None) -> None:
        """In a thread: the session files, then ``journal`` (whose every line, when
        ``changes`` were taken, is among them) emptied of them."""
        try:
            self.registry.apply(changes)
        except BaseException:
            if journal is not None:
                journal.abandon_rewrite()  # it keeps them for the next try or start
            raise
        if journal is not None:
            try:
                journal.rewrite([])
            except OSError as exc:  # its lines are in the files now: applied again at most
                log.error("sessions.journal_failed", file=str(journal.path), error=str(exc))

    def _take_waiting(self) -> list[Change]:
        waiting, self._waiting = self._waiting, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return waiting

    def _sync_job(self) -> Callable[[], None]:
        """On the loop: what the sync lane's thread does next (the ledger's job, and an
        ``fdatasync`` of the changes journal if it was appended to)."""
        ledger_job = self.ledger.sync_job()
        journal = self.journal if self._unsynced else None
        self._unsynced = False
        if journal is None:
            return ledger_job

        def both() -> None:
            try:
                journal.sync()
            except OSError as exc:  # the lines are written; only a power cut could take them
                log.error("sessions.journal_failed", file=str(journal.path), error=str(exc))
            ledger_job()

        return both

    async def _sync_journals(self) -> None:
        """The journals' appended lines to disk, one sync each for those of the last
        ``JOURNAL_SYNC_DELAY_S``; the ledger's rewritten instead when it has grown."""
        while True:
            await self._to_sync.get()
            with contextlib.suppress(TimeoutError):  # (at once when stopping)
                async with asyncio.timeout(JOURNAL_SYNC_DELAY_S):
                    await self._closing.wait()
            changed = 1
            while not self._to_sync.empty():
                self._to_sync.get_nowait()
                changed += 1
            try:
                await asyncio.to_thread(self._sync_job())
            except Exception as exc:  # the next change tries again (a rewrite, if broken)
                log.error("ledger.sync_failed", changes=changed, error=str(exc))
            finally:
                for _ in range(changed):
                    self._to_sync.task_done()
