"""The pending ledger: accepted frontend messages kept in ``pending.jsonl`` until their
answer is in the frontend.

It is the one owner of "delivered or not". A message a frontend hands in with a
``reply_to`` is written here when it is accepted; its final event is stored with it
(``answer``); it leaves only when the frontend reports the answer (or a note) is posted
(:meth:`PendingLedger.delivered`). So a restart of the daemon loses none: the next run
reads the file, and the frontend posts a stored answer, resubmits what had not started,
or tells the author that a run which had started was interrupted (its tools may already
have acted).

Each change is one line appended to the journal before the method returns (``journal.py``:
a crash of the daemon loses none); ``changed`` asks the supervisor's writer to sync it to
disk, and to rewrite the file when it has grown (``sync_job``), off the event loop. A
``pending.json`` left by a version before the journal is read once and folded in.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from claudeclaw import jsonstore
from claudeclaw.errors import ClaudeclawError
from claudeclaw.journal import Journal, read_records
from claudeclaw.logs import get_logger
from claudeclaw.model import PendingMessage, RunDone, RunEvent, RunFailed, RunQueued, RunStarted
from claudeclaw.paths import corrupt_aside_path

log = get_logger()

KEPT_TEXT = "claudeclaw is restarting; this message is kept and runs when it is back."
HEADER = {"journal": "claudeclaw-pending", "version": 1}


def replay(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The entries a ledger journal holds now, in the order they were accepted (each
    ``{"put": entry}`` line adds or replaces one, ``{"drop": msg_id}`` removes it), and
    what could not be read."""
    records, problems = read_records(path, keeps="messages not answered yet")
    entries: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(records, 1):
        put, drop = record.get("put"), record.get("drop")
        if isinstance(put, dict) and isinstance(put.get("msg_id"), str):
            entries[put["msg_id"]] = put
        elif isinstance(drop, str):
            entries.pop(drop, None)
        elif record.get("journal") != HEADER["journal"]:
            problems.append(f"record {number}: neither put nor drop ({sorted(record)[:3]})")
    return list(entries.values()), problems


def read_entries(path: Path) -> list[dict[str, Any]]:
    """What the ledger at ``path`` holds, as another process sees it (blocking)."""
    return replay(path)[0]


class PendingLedger:
    """``accepted``: this run's messages whose answer is not posted yet; ``recovered``: those
    an earlier run of the daemon left, until the frontend posts their answer or submits
    them again."""

    def __init__(self, path: Path, changed: Callable[[], None]) -> None:
        self.path = path
        self.journal = Journal(path)
        self.legacy_path = path.with_suffix(".json")  # pending.json, before the journal
        self._changed = changed
        self.accepted: dict[str, PendingMessage] = {}
        self.recovered: list[PendingMessage] = []
        self._handed_out = False
        self._ran: set[str] = set()  # accepted messages whose claude run really began
        self._legacy_problems: list[str] | None = None  # pending.json read, not yet removed

    def read(self) -> list[PendingMessage]:
        """Load what an earlier run left into ``recovered``, then rewrite the journal with
        just that (blocking; before the first ``accept``). A bad entry is logged and
        skipped, and the file that held it is kept aside (``<name>.corrupt-<time>``); a
        journal that cannot be read at all raises StateError (the daemon does not start
        rather than drop what it keeps)."""
        entries, problems = replay(self.path)
        found = self._parse(entries, problems)
        if problems:
            self.journal.keep_aside(problems)
        known = {p.msg_id for p in found}
        legacy = [e for e in self._read_legacy() if e.get("msg_id") not in known]
        self._legacy_problems = []
        found += self._parse(legacy, self._legacy_problems)
        self.recovered = found
        self.journal.begin_rewrite()
        try:
            self._rewrite(self._records())
        except OSError as exc:  # a full disk must not stop the daemon: the next sync retries
            # (the journal is broken until then; pending.json, if any, stays until then too)
            log.error("ledger.write_failed", file=str(self.path), error=str(exc))
        return self.recovered

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        """The journal rewritten (blocking); then an earlier version's file, now folded in,
        goes: never before, or a restart would read its entries again."""
        self.journal.rewrite(records)
        if self._legacy_problems is not None:
            self._retire_legacy(self._legacy_problems)
            self._legacy_problems = None

    @staticmethod
    def _parse(entries: list[dict[str, Any]], problems: list[str]) -> list[PendingMessage]:
        found = []
        for entry in entries:
            try:
                found.append(PendingMessage.from_json(entry))
            except (KeyError, TypeError, ValueError, ClaudeclawError) as exc:
                problems.append(f"entry {entry.get('msg_id')!r}: {exc!r}")
        return found

    def _read_legacy(self) -> list[dict[str, Any]]:
        try:
            data = jsonstore.read_json(self.legacy_path)
        except ClaudeclawError as exc:
            log.error("daemon.pending_unreadable", file=str(self.legacy_path), error=str(exc))
            return []
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []

    def _retire_legacy(self, problems: list[str]) -> None:
        """Its entries are in the journal now (synced): the old file goes, or is kept
        aside when some of them could not be read."""
        if problems and self.legacy_path.exists():
            aside = corrupt_aside_path(self.legacy_path)
            os.replace(self.legacy_path, aside)
            log.error("ledger.entries_skipped", kept_as=str(aside), problems=problems[:5])
        for old in (self.legacy_path, jsonstore.backup_path(self.legacy_path)):
            try:
                os.unlink(old)
            except FileNotFoundError:
                pass

    def take_recovered(self) -> list[PendingMessage]:
        """The earlier run's messages, handed out once (they stay in the ledger until the
        frontend reports them delivered or submits them again)."""
        if self._handed_out:
            return []
        self._handed_out = True
        return list(self.recovered)

    def accept(self, item: PendingMessage, *, starts_at_once: bool = False) -> None:
        """A new message; one the earlier run left for the same frontend message is
        replaced by it (the frontend submitted it again).

        ``starts_at_once``: its worker was handed the run with its slot, so claude starts
        it within milliseconds. It is written as started already: one durable write fewer
        per message, and no window in which its tools could act before the mark is on disk
        (a daemon killed in that window tells its author it was interrupted instead of
        running it twice)."""
        for old in [r for r in self.recovered if r.reply_to == item.reply_to]:
            self.recovered.remove(old)
            if old.msg_id != item.msg_id:
                self._append({"drop": old.msg_id})
        if starts_at_once:
            item = dataclasses.replace(item, started=True)
        self._put(item)

    def delivered(self, msg_id: str) -> None:
        """The frontend posted the message's answer (or a note): it leaves the ledger."""
        self._ran.discard(msg_id)
        kept = [r for r in self.recovered if r.msg_id != msg_id]
        if self.accepted.pop(msg_id, None) is None and len(kept) == len(self.recovered):
            return
        self.recovered = kept
        self._append({"drop": msg_id})

    def note_event(self, event: RunEvent) -> None:
        """Track whether the message's run started: a restart must not run a started one
        again (its tools may have acted), but may rerun one the usage limit refused."""
        item = self.accepted.get(event.msg_id)
        if item is None:
            return
        refused = isinstance(event, RunFailed) and event.reason == "rate_limited"
        if (refused or (isinstance(event, RunQueued) and event.resets_at)) and item.started:
            # refused by the usage limit before anything ran; it waits for the reset
            self._ran.discard(event.msg_id)
            item = dataclasses.replace(item, started=False)
            self._put(item)
        if isinstance(event, RunStarted):
            self._ran.add(event.msg_id)
            if not item.started:  # (one accepted as starting at once is marked already)
                self._put(dataclasses.replace(item, started=True))

    def settle(self, event: RunDone | RunFailed) -> RunDone | RunFailed:
        """The message's final event: store it as the answer the frontend has to post. One
        a stop prevented from starting keeps waiting (it runs after the restart), and its
        final event says so."""
        item = self.accepted.get(event.msg_id)
        if item is None:
            return event
        if (
            isinstance(event, RunFailed)
            and event.reason == "shutdown"
            and event.msg_id not in self._ran
        ):
            log.info("message.kept_for_restart", session_key=item.key, msg_id=item.msg_id)
            if item.started:  # marked when it was handed over, but claude never began it
                self._put(dataclasses.replace(item, started=False))
            return RunFailed(event.msg_id, "kept", KEPT_TEXT)
        self._put(dataclasses.replace(item, answer=event))
        return event

    def snapshot(self) -> list[dict[str, Any]]:
        """What the ledger holds now, as its entries are stored."""
        return [p.to_json() for p in [*self.recovered, *self.accepted.values()]]

    def _records(self) -> list[dict[str, Any]]:
        return [HEADER, *({"put": entry} for entry in self.snapshot())]

    def _put(self, item: PendingMessage) -> None:
        self.accepted[item.msg_id] = item
        self._append({"put": item.to_json()})

    def _append(self, record: dict[str, Any]) -> None:
        try:
            self.journal.append(record)
        except OSError as exc:  # a full disk must not stop replies: rewritten whole later
            log.error("ledger.write_failed", file=str(self.path), error=str(exc))
        self._changed()

    def sync_job(self) -> Callable[[], None]:
        """On the loop: what the writer's thread does next. A rewrite with the entries
        as they are now when the journal has grown (or an append failed), else an
        ``fdatasync`` of what was appended."""
        if self.journal.wants_rewrite() and self.journal.begin_rewrite():
            records = self._records()
            return lambda: self._rewrite(records)
        return self.journal.sync

    def close(self) -> None:
        self.journal.close()
