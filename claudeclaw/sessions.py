"""The session registry: which Claude session id belongs to which session key.

The files keep the original ClaudeClaw's formats so an existing state directory works
unchanged (and could be handed back to it):

* ``global`` → ``session.json``: ``{"sessionId", "createdAt", "lastUsedAt", "turnCount",
  "compactWarned"}`` plus anything else it holds (``messageCount``...).
* every other key → ``sessions.json``: ``{"threads": {"<key>": {"sessionId", "threadId",
  "createdAt", "lastUsedAt", "turnCount", "compactWarned"}}}``, plus ``"workspace"`` for a
  session that runs in its own git worktree (an added field: the original ignores it).
  Entries we cannot use (job names such as ``daily-report``) and fields we do not know are
  preserved.

Unlike the original, the file is read on every call (several processes share it), a read
never writes, and writes are atomic, flock-serialised and backed up (``jsonstore``). The
daemon journals its changes in ``sessions.changes.jsonl`` as they happen and rewrites these
files at most every 30 s (``statewriter.py``); :meth:`SessionRegistry.fold_changes`
writes in what a killed daemon left there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from claudeclaw import journal, jsonstore
from claudeclaw.errors import InvalidKeyError
from claudeclaw.logs import get_logger
from claudeclaw.model import (
    GLOBAL_KEY,
    SessionId,
    SessionKey,
    SessionRecord,
    Workspace,
    session_key,
)
from claudeclaw.paths import ProjectPaths, fsync_dir

_THREADS = "threads"

log = get_logger(component="sessions")


def utc_now_iso() -> str:
    """Now as JavaScript's ``Date.toISOString()`` writes it: ``2026-11-25T01:02:03.456Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


CHANGE_OPS = frozenset({"record", "touch", "workspace", "remove"})
# ("record", key, id), ("touch", key, id), ("workspace", key, json), ("remove", key, ""):
# see SessionRegistry.apply
Change = tuple[str, SessionKey, str]


def change_record(op: str, key: SessionKey, value: str) -> dict[str, str]:
    """A change as a line of ``sessions.changes.jsonl``."""
    return {"op": op, "key": key, "value": value}


def _change_from_record(record: dict[str, Any]) -> Change | None:
    """A line of ``sessions.changes.jsonl`` → the change; None if it is not one."""
    op, key, value = record.get("op"), record.get("key"), record.get("value")
    if op not in CHANGE_OPS or not isinstance(key, str) or not isinstance(value, str):
        return None
    try:
        return str(op), session_key(key), value
    except InvalidKeyError:
        return None


def _is_registry(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get(_THREADS, {}), dict)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def _to_record(key: SessionKey, entry: Any) -> SessionRecord | None:
    """An entry as stored → record; None when it holds no session (absent/empty id)."""
    if not isinstance(entry, dict):
        return None
    sid = entry.get("sessionId")
    if not isinstance(sid, str) or not sid:
        return None
    created = entry.get("createdAt")
    last = entry.get("lastUsedAt")
    created_s = created if isinstance(created, str) else ""
    return SessionRecord(
        key=key,
        session_id=SessionId(sid),
        created_at=created_s,
        last_used_at=last if isinstance(last, str) else created_s,
        turn_count=_int(entry.get("turnCount", 0)),
        compact_warned=entry.get("compactWarned") is True,
        workspace=Workspace.from_json(entry.get("workspace")) if key != GLOBAL_KEY else None,
    )


def _new_entry(key: SessionKey, session_id: str, old: Any) -> dict[str, Any]:
    """A fresh entry for a new session id, keeping fields we do not know from ``old``."""
    entry: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
    now = utc_now_iso()
    entry.update(
        sessionId=session_id, createdAt=now, lastUsedAt=now, turnCount=0, compactWarned=False
    )
    if "messageCount" in entry:  # upstream's rotation counter belongs to the old session
        entry["messageCount"] = 0
    if key != GLOBAL_KEY:
        entry["threadId"] = key
    else:
        entry.pop("threadId", None)
    # Upstream's key order first, then whatever else was there.
    order = ["sessionId", "threadId", "createdAt", "lastUsedAt", "turnCount", "compactWarned"]
    return {k: entry[k] for k in order if k in entry} | {
        k: v for k, v in entry.items() if k not in order
    }


def _backfill(key: SessionKey, entry: dict[str, Any]) -> None:
    """Fill fields an older writer left out (as upstream's getThreadSession did)."""
    now = utc_now_iso()
    if not isinstance(entry.get("createdAt"), str):
        entry["createdAt"] = now
    if not isinstance(entry.get("turnCount"), int) or isinstance(entry.get("turnCount"), bool):
        entry["turnCount"] = _int(entry.get("turnCount"))
    if not isinstance(entry.get("compactWarned"), bool):
        entry["compactWarned"] = False
    if key != GLOBAL_KEY and "threadId" not in entry:
        entry["threadId"] = key


def _recorded(key: SessionKey, entry: Any, session_id: str) -> Any:
    """``entry`` after recording ``session_id``: unchanged if it is already the session,
    else a new session's entry (turns 0) keeping fields we do not understand."""
    existing = _to_record(key, entry)
    if existing is not None and existing.session_id == session_id:
        return entry
    return _new_entry(key, session_id, entry)


def _touched(key: SessionKey, entry: Any) -> Any:
    """``entry`` after a successful turn (no session: unchanged)."""
    if _to_record(key, entry) is None:
        return entry
    new = dict(entry)
    _backfill(key, new)
    new["lastUsedAt"] = utc_now_iso()
    new["turnCount"] = _int(new.get("turnCount")) + 1
    return new


def _with_workspace(key: SessionKey, entry: Any, payload: str) -> Any:
    """``entry`` with its ``workspace`` set to the JSON ``payload`` ("" drops it). Only a
    session's entry takes one: no placeholder entry is ever written for it."""
    if key == GLOBAL_KEY or _to_record(key, entry) is None:
        return entry
    new = dict(entry)
    if payload:
        new["workspace"] = json.loads(payload)
    else:
        new.pop("workspace", None)
    return new


def entry_problem(entry: Any) -> str:
    """Why a stored entry cannot be used as a session ("" when it can, or when it is an
    empty placeholder or a job entry without a ``sessionId``)."""
    if not isinstance(entry, dict):
        return f"the entry is a {type(entry).__name__}, not an object"
    if "sessionId" in entry and not isinstance(entry["sessionId"], str):
        return f"sessionId is a {type(entry['sessionId']).__name__}, not a string"
    return ""


def _repaired(key: SessionKey, entry: Any, session_id: str) -> Any:
    """A dict entry whose ``sessionId`` is wrongly typed, with the id the daemon knows
    put back (turns and dates kept); anything else unchanged."""
    if not session_id or not isinstance(entry, dict) or not entry_problem(entry):
        return entry
    log.warning(
        "sessions.entry_repaired", session_key=key, problem=entry_problem(entry), fixed=True
    )
    return {**entry, "sessionId": session_id}


def _changed(key: SessionKey, entry: Any, *, op: str, session_id: str) -> Any:
    """One registry change by name (the daemon's batched writer): None deletes. For
    ``workspace`` the third field is the workspace as JSON text."""
    if op == "record":
        return _recorded(key, entry, session_id)
    if op == "workspace":
        return _with_workspace(key, entry, session_id)
    if op == "touch":  # the daemon knows this key's session: a mistyped id is put right
        return _touched(key, _repaired(key, entry, session_id))
    if op == "remove":
        return None
    raise ValueError(f"unknown registry change {op!r}")


def _with_thread_entry(data: Any, key: SessionKey, fn: Callable[[Any], Any]) -> Any:
    """The sessions.json document with ``key``'s entry replaced by ``fn(old)`` (None
    deletes it); an absent document stays absent when there is nothing to store."""
    old = data.get(_THREADS, {}).get(key) if data is not None else None
    new = fn(old)
    if new is None and old is None:
        return data  # nothing to store or delete: no write, no new file
    if data is None:
        data = {_THREADS: {}}
    threads = data.setdefault(_THREADS, {})
    if new is None:
        threads.pop(key, None)
    else:
        threads[key] = new
    return data


class SessionRegistry:
    """Session key → Claude session id, persisted in upstream's two files.

    Synchronous file I/O under ``paths.lock_file``; async callers use
    ``asyncio.to_thread``. Every call re-reads the file: no cache can go stale when the
    supervisor, workers and the CLI share one state directory.
    """

    def __init__(self, paths: ProjectPaths) -> None:
        self._paths = paths
        self._creating: dict[SessionKey, tuple[asyncio.Lock, int]] = {}

    # ---- file plumbing ------------------------------------------------------------------

    def _read_global(self) -> Any:
        """session.json (None if absent); reads only."""
        return jsonstore.read_json(
            self._paths.global_session_file,
            validate=jsonstore.is_object,
            lock_path=self._paths.lock_file,
        )

    def _read_threads(self) -> Any:
        """The sessions.json document (None if absent); reads only."""
        return jsonstore.read_json(
            self._paths.thread_sessions_file,
            validate=_is_registry,
            lock_path=self._paths.lock_file,
        )

    def _read(self, key: SessionKey) -> Any:
        """The raw entry for ``key`` (None if absent); reads only."""
        if key == GLOBAL_KEY:
            return self._read_global()
        data = self._read_threads()
        if data is None:
            return None
        return data.get(_THREADS, {}).get(key)

    def _update(self, key: SessionKey, fn: Callable[[Any], Any], lock: Path | None) -> None:
        """Read-modify-write ``key``'s entry under ``lock`` (None: the caller holds it).
        ``fn(entry | None)`` returns the new entry, or None to delete it (the global file
        is then removed)."""
        if key == GLOBAL_KEY:
            path = self._paths.global_session_file
            with jsonstore.locked(lock):
                current = jsonstore.read_json(path, validate=jsonstore.is_object)
                new = fn(current)
                if new is None:
                    if current is not None:
                        jsonstore.remove_json(path)
                elif new != current:
                    jsonstore.write_json(path, new, validate=jsonstore.is_object)
            return

        jsonstore.update_json(
            self._paths.thread_sessions_file,
            lock,
            lambda data: _with_thread_entry(data, key, fn),
            validate=_is_registry,
        )

    # ---- the API ----------------------------------------------------------------------

    def get(self, key: SessionKey) -> SessionRecord | None:
        """The stored session of ``key``, or None. Never writes (except crash recovery)."""
        key = session_key(key)
        return _to_record(key, self._read(key))

    def record(self, key: SessionKey, session_id: str) -> SessionRecord:
        """Store the id the CLI reported. Same id: unchanged; another id: a new record
        (turns 0, new createdAt), keeping any fields we do not understand."""
        key = session_key(key)
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        result: list[SessionRecord] = []

        def fn(entry: Any) -> Any:
            new = _recorded(key, entry, session_id)
            rec = _to_record(key, new)
            assert rec is not None  # a just-recorded entry is always a session
            result.append(rec)
            return new

        self._update(key, fn, self._paths.lock_file)
        return result[0]

    def touch(self, key: SessionKey) -> SessionRecord | None:
        """After a successful turn: ``lastUsedAt`` = now, ``turnCount`` + 1.
        None (and no write) when ``key`` has no session."""
        key = session_key(key)
        result: list[SessionRecord] = []

        def fn(entry: Any) -> Any:
            new = _touched(key, entry)
            rec = _to_record(key, new) if new is not entry else None
            if rec is not None:
                result.append(rec)
            return new

        self._update(key, fn, self._paths.lock_file)
        return result[0] if result else None

    def remove(self, key: SessionKey) -> SessionRecord | None:
        """Forget ``key``'s session (the transcript on disk is left alone). Returns what
        was removed, or None if there was no session (a placeholder entry is dropped too).
        """
        key = session_key(key)
        result: list[SessionRecord] = []

        def fn(entry: Any) -> Any:
            rec = _to_record(key, entry)
            if rec is not None:
                result.append(rec)
            return None

        self._update(key, fn, self._paths.lock_file)
        return result[0] if result else None

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply many ``("record", key, id)``, ``("touch", key, "")``, ``("workspace", key,
        json)`` and ``("remove", key, "")`` changes, in order, with one locked write per
        file: the daemon's batched writer (a busy daemon would otherwise fsync once per run
        event)."""
        self._apply(changes, self._paths.lock_file)

    def fold_changes(self) -> int:
        """Write into the session files the changes a daemon journaled but had not written
        yet (``sessions.changes.jsonl``: it was killed, or the machine went down), then
        empty that journal; at the daemon's start and before a command reads the files
        without one. Blocking, under the writers' lock; returns how many were applied.

        A line that cannot be read is logged and skipped, and the file kept aside first
        (``<name>.corrupt-<time>``); one that cannot be read at all raises StateError."""
        path = self._paths.session_changes_file
        if not path.exists():
            return 0
        with jsonstore.locked(self._paths.lock_file):
            records, problems = journal.read_records(path, keeps="session changes not written yet")
            changes: list[Change] = []
            for number, record in enumerate(records, 1):
                change = _change_from_record(record)
                if change is None:
                    problems.append(f"record {number}: not a session change ({record!r:.80})")
                else:
                    changes.append(change)
            if problems:
                journal.Journal(path).keep_aside(problems)
            if changes:
                self._apply(changes, None)  # (the lock is held)
                log.warning("sessions.changes_folded", count=len(changes), file=str(path))
            path.unlink(missing_ok=True)  # (another command may have folded it meanwhile)
            fsync_dir(path.parent)
        return len(changes)

    def _apply(self, changes: Sequence[Change], lock: Path | None) -> None:
        """:meth:`apply` under ``lock`` (None: the caller holds it)."""
        by_file: dict[bool, list[Change]] = {True: [], False: []}
        for op, key, session_id in changes:
            by_file[session_key(key) == GLOBAL_KEY].append((op, session_key(key), session_id))

        if by_file[True]:

            def on_global(entry: Any) -> Any:
                for op, key, session_id in by_file[True]:
                    entry = _changed(key, entry, op=op, session_id=session_id)
                return entry

            self._update(GLOBAL_KEY, on_global, lock)
        if by_file[False]:

            def on_threads(data: Any) -> Any:
                for op, key, session_id in by_file[False]:
                    data = _with_thread_entry(
                        data, key, partial(_changed, key, op=op, session_id=session_id)
                    )
                return data

            jsonstore.update_json(
                self._paths.thread_sessions_file,
                lock,
                on_threads,
                validate=_is_registry,
            )

    def validate(self) -> list[str]:
        """Check every stored entry (at daemon start): each one whose session cannot be
        used (a ``sessionId`` that is not a string, an entry that is not an object) is
        logged with the fix and skipped, so its thread starts a new session; the file's
        other entries are kept and nothing is rewritten. Returns the problems found."""
        problems: list[str] = []
        found: list[tuple[str, Any]] = []
        glob = self._read_global()
        if glob is not None:
            found.append((GLOBAL_KEY, glob))
        data = self._read_threads()
        if data is not None:
            found.extend(data.get(_THREADS, {}).items())
        for raw_key, entry in found:
            problem = entry_problem(entry)
            if problem:
                where = "session.json" if raw_key == GLOBAL_KEY else f"sessions.json {raw_key!r}"
                problems.append(f"{where}: {problem}")
                log.warning(
                    "sessions.entry_invalid",
                    session_key=raw_key,
                    problem=problem,
                    fix="the entry is skipped (its thread starts a new session); set "
                    "sessionId to the session's id string, or remove the entry",
                )
        return problems

    def list(self) -> list[SessionRecord]:
        """Thread (and channel) sessions in insertion order; not the global one, not job
        entries such as ``daily-report``, not placeholders with an empty id."""
        data = self._read_threads()
        if data is None:
            return []
        records: list[SessionRecord] = []
        for raw_key, entry in data.get(_THREADS, {}).items():
            try:
                key = session_key(raw_key)
            except InvalidKeyError:
                continue
            if key == GLOBAL_KEY:
                continue
            rec = _to_record(key, entry)
            if rec is not None:
                records.append(rec)
        return records

    async def get_or_create(
        self, key: SessionKey, create: Callable[[], Awaitable[str]]
    ) -> SessionRecord:
        """The session of ``key``; if there is none, ``await create()`` for a new id and
        record it. Concurrent calls for one key in this process share one ``create``;
        across processes the supervisor's one-worker-per-key rule prevents a race."""
        key = session_key(key)
        lock, users = self._creating.get(key, (asyncio.Lock(), 0))
        self._creating[key] = (lock, users + 1)
        try:
            async with lock:
                existing = await asyncio.to_thread(self.get, key)
                if existing is not None:
                    return existing
                session_id = await create()
                return await asyncio.to_thread(self.record, key, session_id)
        finally:
            lock, users = self._creating[key]
            if users <= 1:
                del self._creating[key]
            else:
                self._creating[key] = (lock, users - 1)
