"""The pending ledger: accepted frontend messages kept in ``pending.json`` until answered.

A message a frontend hands in with a ``reply_to`` is written here when it is accepted and
leaves when its answer is settled, so a restart of the daemon loses none: the next run
reads the file, and the frontend resubmits what had not started (or tells its author that
a run which had started was interrupted; its tools may already have acted).

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
from claudeclaw.model import PendingMessage, RunEvent, RunFailed, RunStarted

log = get_logger()

KEPT_TEXT = "claudeclaw is restarting; this message is kept and runs when it is back."


class PendingLedger:
    """``accepted``: this run's messages not answered yet; ``recovered``: those an earlier
    run of the daemon left, until a frontend takes them."""

    def __init__(self, path: Path, changed: Callable[[], None]) -> None:
        self.path = path
        self._changed = changed
        self.accepted: dict[str, PendingMessage] = {}
        self.recovered: list[PendingMessage] = []

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
        """The earlier run's messages, each handed out once."""
        taken, self.recovered = self.recovered, []
        if taken:
            self._changed()
        return taken

    def accept(self, item: PendingMessage) -> None:
        self.accepted[item.msg_id] = item
        self._changed()

    def note_event(self, event: RunEvent) -> None:
        """Track whether the message's run started: a restart must not run a started one
        again (its tools may have acted), but may rerun one the usage limit refused."""
        item = self.accepted.get(event.msg_id)
        if item is None:
            return
        if isinstance(event, RunFailed) and event.reason == "rate_limited":
            self.accepted[event.msg_id] = dataclasses.replace(item, started=False)
            self._changed()
        if isinstance(event, RunStarted) and not item.started:
            self.accepted[event.msg_id] = dataclasses.replace(item, started=True)
            self._changed()

    def settle(self, event: RunEvent) -> RunEvent:
        """The message's final event: drop it from the ledger; keep one a stop prevented
        from starting (it runs after the restart) and say so in its final event."""
        item = self.accepted.get(event.msg_id)
        if item is None:
            return event
        if isinstance(event, RunFailed) and event.reason == "shutdown" and not item.started:
            log.info("message.kept_for_restart", session_key=item.key, msg_id=item.msg_id)
            return RunFailed(event.msg_id, "kept", KEPT_TEXT)
        del self.accepted[event.msg_id]
        self._changed()
        return event

    def snapshot(self) -> list[dict[str, Any]]:
        """What pending.json should hold now."""
        return [p.to_json() for p in [*self.recovered, *self.accepted.values()]]

    def write(self, snapshot: list[dict[str, Any]]) -> None:
        """Put ``snapshot`` on disk, atomically (blocking)."""
        jsonstore.write_json(self.path, snapshot)
