"""The pending ledger: accepted frontend messages kept in ``pending.json`` until their
answer is in the frontend.

It is the one owner of "delivered or not". A message a frontend hands in with a
``reply_to`` is written here when it is accepted; its final event is stored with it
(``answer``); it leaves only when the frontend reports the answer (or a note) is posted
(:meth:`PendingLedger.delivered`). So a restart of the daemon loses none: the next run
reads the file, and the frontend posts a stored answer, resubmits what had not started,
or tells the author that a run which had started was interrupted (its tools may already
have acted).

The ledger only keeps the facts; the supervisor's batched writer puts the snapshot on
disk (``changed`` asks it to), off the event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from claudeclaw import jsonstore
from claudeclaw.errors import ClaudeclawError
from claudeclaw.logs import get_logger
from claudeclaw.model import PendingMessage, RunDone, RunEvent, RunFailed, RunQueued, RunStarted

log = get_logger()

KEPT_TEXT = "claudeclaw is restarting; this message is kept and runs when it is back."


class PendingLedger:
    """``accepted``: this run's messages whose answer is not posted yet; ``recovered``: those
    an earlier run of the daemon left, until the frontend posts their answer or submits
    them again."""

    def __init__(self, path: Path, changed: Callable[[], None]) -> None:
        self.path = path
        self._changed = changed
        self.accepted: dict[str, PendingMessage] = {}
        self.recovered: list[PendingMessage] = []
        self._handed_out = False
        self._ran: set[str] = set()  # accepted messages whose claude run really began

    def read(self) -> list[PendingMessage]:
        """Load pending.json of an earlier run into ``recovered`` (blocking); a bad entry is
        logged and skipped."""
        self.recovered = self._read()
        return self.recovered

    def _read(self) -> list[PendingMessage]:
        try:
            data = jsonstore.read_json(self.path)
        except ClaudeclawError as exc:
            log.error("daemon.pending_unreadable", file=str(self.path), error=str(exc))
            return []
        if not isinstance(data, list):
            return []
        found = []
        for entry in data:
            try:
                found.append(PendingMessage.from_json(entry))
            except (KeyError, TypeError, ValueError, ClaudeclawError) as exc:
                log.error("daemon.pending_entry_skipped", error=str(exc))
        return found

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
        self.recovered = [r for r in self.recovered if r.reply_to != item.reply_to]
        if starts_at_once:
            item = dataclasses.replace(item, started=True)
        self.accepted[item.msg_id] = item
        self._changed()

    def delivered(self, msg_id: str) -> None:
        """The frontend posted the message's answer (or a note): it leaves the ledger."""
        self._ran.discard(msg_id)
        kept = [r for r in self.recovered if r.msg_id != msg_id]
        if self.accepted.pop(msg_id, None) is None and len(kept) == len(self.recovered):
            return
        self.recovered = kept
        self._changed()

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
            self.accepted[event.msg_id] = dataclasses.replace(item, started=False)
            self._changed()
        if isinstance(event, RunStarted):
            self._ran.add(event.msg_id)
            if not item.started:  # (one accepted as starting at once is marked already)
                self.accepted[event.msg_id] = dataclasses.replace(item, started=True)
                self._changed()

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
                self.accepted[event.msg_id] = dataclasses.replace(item, started=False)
                self._changed()
            return RunFailed(event.msg_id, "kept", KEPT_TEXT)
        self.accepted[event.msg_id] = dataclasses.replace(item, answer=event)
        self._changed()
        return event

    def snapshot(self) -> list[dict[str, Any]]:
        """What pending.json should hold now."""
        return [p.to_json() for p in [*self.recovered, *self.accepted.values()]]

    def write(self, snapshot: list[dict[str, Any]]) -> None:
        """Put ``snapshot`` on disk, atomically (blocking)."""
        jsonstore.write_json(self.path, snapshot)
