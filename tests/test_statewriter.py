"""The state writer: two lanes (registry; the journals' syncs), the session changes
journal, and changes that wait for the next registry write.

Unit tests with a recording registry and ledger, and a real changes journal in a temp
dir; the daemon tests (and ``test_faults``) cover the real files.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from claudeclaw import statewriter
from claudeclaw.journal import Journal, read_records
from claudeclaw.model import SessionKey
from claudeclaw.sessions import Change
from claudeclaw.statewriter import StateWriter

KEY = SessionKey("123456789012345678")
OTHER = SessionKey("223456789012345678")


class Registry:
    def __init__(self) -> None:
        self.applied: list[list[Change]] = []
        self.fail = False  # apply() raises (a full disk)
        self.gate: threading.Event | None = None  # apply() blocks until it is set
        self.entered = threading.Event()
        self.wrote = threading.Event()  # set after each apply (clear it to wait for the next)

    def apply(self, changes: list[Change]) -> None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise OSError(28, "No space left on device")
        self.applied.append(list(changes))
        self.wrote.set()

    def ops(self) -> list[tuple[str, str]]:
        return [(op, key) for batch in self.applied for op, key, _ in batch]


class Ledger:
    def __init__(self) -> None:
        self.syncs = 0
        self.wrote = threading.Event()
        self.closed = False

    def sync_job(self) -> Any:
        return self.sync

    def sync(self) -> None:
        self.syncs += 1
        self.wrote.set()

    def close(self) -> None:
        self.closed = True


async def _writer(changes: Journal | None) -> Any:
    registry, ledger = Registry(), Ledger()
    state = StateWriter(registry, ledger, lambda: [], changes)  # type: ignore[arg-type]
    task = asyncio.create_task(state.run())
    yield state, registry, ledger
    if registry.gate is not None:
        registry.gate.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def writer() -> Any:
    """Without a changes journal: every change is written at once."""
    async for made in _writer(None):
        yield made


@pytest.fixture
async def journaled(tmp_path: Any) -> Any:
    """With the daemon's changes journal."""
    journal = Journal(tmp_path / "sessions.changes.jsonl")
    async for state, registry, ledger in _writer(journal):
        yield state, registry, ledger, journal


async def _join_waits_for_the_write(
    state: StateWriter, registry: Registry, meanwhile: threading.Event
) -> None:
    """The registry write of ``("record", KEY)`` hangs at its gate: a join waits (while
    ``meanwhile`` happens) until the gate opens and the write lands."""
    joined = asyncio.create_task(state.join())
    assert await asyncio.to_thread(meanwhile.wait, 10)
    assert not joined.done() and not registry.applied
    assert registry.gate is not None
    registry.gate.set()
    await asyncio.wait_for(joined, 10)
    assert registry.ops() == [("record", KEY)]


def lines(journal: Journal) -> list[tuple[str, str]]:
    return [(r["op"], r["key"]) for r in read_records(journal.path, keeps="session changes")[0]]


async def test_a_touch_does_not_hold_up_a_reply_and_rides_with_the_next_write(
    writer: Any,
) -> None:
    """1. A turn's touch and its stored answer (a ledger line); the reply joins.
    2. Another key's session is recorded.
    Result: the join waited neither for the touch (it went with the next registry write)
    nor for the ledger's sync (its line was written when it was appended)."""
    state, registry, ledger = writer
    state.put_nowait(("touch", KEY, "s1"))
    state.ledger_changed()
    await state.join()
    assert registry.applied == [] and ledger.syncs == 0
    state.put_nowait(("record", OTHER, "s2"))
    await state.join()
    assert registry.ops() == [("touch", KEY), ("record", OTHER)]  # in the order they came


async def test_a_keys_later_change_is_written_after_its_waiting_touch(writer: Any) -> None:
    """A touch then a reset (remove) of the same key: the touch is written first, so it
    can never bring the removed session back."""
    state, registry, _ = writer
    state.put_nowait(("touch", KEY, "s1"))
    state.put_nowait(("remove", KEY, ""))
    await state.join()
    assert registry.ops() == [("touch", KEY), ("remove", KEY)]


async def test_waiting_touches_are_written_by_flush_or_after_the_delay(
    writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, registry, _ = writer
    state.put_nowait(("touch", KEY, "s1"))
    await state.flush()
    assert registry.ops() == [("touch", KEY)]
    monkeypatch.setattr(statewriter, "REGISTRY_DELAY_S", 0.05)
    registry.wrote.clear()
    state.put_nowait(("touch", KEY, "s1"))
    assert await asyncio.to_thread(registry.wrote.wait, 10)
    assert registry.ops() == [("touch", KEY), ("touch", KEY)]


async def test_the_ledger_is_not_queued_behind_a_slow_registry_write(
    writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session write hangs (a slow disk); the ledger is synced meanwhile, and a join
    still waits for the session."""
    monkeypatch.setattr(statewriter, "JOURNAL_SYNC_DELAY_S", 0.0)
    state, registry, ledger = writer
    registry.gate = threading.Event()
    state.put_nowait(("record", KEY, "s1"))
    await asyncio.to_thread(registry.entered.wait, 10)
    state.ledger_changed()
    await _join_waits_for_the_write(state, registry, ledger.wrote)


async def test_ledger_lines_are_synced_together_and_at_once_at_a_stop(
    writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three ledger lines in a burst: one fdatasync for all of them (group commit). At a
    stop the sync does not wait out the delay, and the journal is closed."""
    monkeypatch.setattr(statewriter, "JOURNAL_SYNC_DELAY_S", 0.05)
    state, _, ledger = writer
    for _ in range(3):
        state.ledger_changed()
    await asyncio.wait_for(state._to_sync.join(), 10)  # all three taken by the lane
    assert ledger.syncs == 1
    monkeypatch.setattr(statewriter, "JOURNAL_SYNC_DELAY_S", 60.0)
    state.ledger_changed()
    await asyncio.wait_for(state.close(), 10)  # not 60 s
    assert ledger.syncs >= 2 and ledger.closed


async def test_a_journaled_change_is_on_disk_at_once_and_the_reply_does_not_wait(
    journaled: Any,
) -> None:
    """A new session is recorded while the registry's write would hang (a slow disk):
    its line is in the changes journal when ``put_nowait`` returns, and the reply's join
    does not wait for the session files. A read (flush) writes them, and the journal is
    emptied of what they now hold."""
    state, registry, _, journal = journaled
    registry.gate = threading.Event()
    state.put_nowait(("record", KEY, "s1"))
    assert lines(journal) == [("record", KEY)]
    await asyncio.wait_for(state.join(), 10)
    assert registry.applied == [] and not registry.entered.is_set()
    flushed = asyncio.create_task(state.flush())
    assert await asyncio.to_thread(registry.entered.wait, 10)
    assert not flushed.done()
    registry.gate.set()
    await asyncio.wait_for(flushed, 10)
    assert registry.ops() == [("record", KEY)]
    assert lines(journal) == []


async def test_journaled_changes_are_written_together_after_the_delay(
    journaled: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three new sessions and a touch within the delay: one registry write for all of
    them, in order, then an empty journal."""
    monkeypatch.setattr(statewriter, "REGISTRY_DELAY_S", 0.05)
    state, registry, _, journal = journaled
    state.put_nowait(("record", KEY, "s1"))
    state.put_nowait(("touch", KEY, "s1"))
    state.put_nowait(("record", OTHER, "s2"))
    state.put_nowait(("workspace", OTHER, "{}"))
    assert lines(journal) == [("record", KEY), ("record", OTHER), ("workspace", OTHER)]
    assert await asyncio.to_thread(registry.wrote.wait, 10)
    await asyncio.wait_for(state.join(), 10)
    assert registry.applied == [
        [
            ("record", KEY, "s1"),
            ("touch", KEY, "s1"),
            ("record", OTHER, "s2"),
            ("workspace", OTHER, "{}"),
        ]
    ]
    assert lines(journal) == []


async def test_a_change_journaled_while_the_registry_is_written_stays_in_the_journal(
    journaled: Any,
) -> None:
    """The registry's write of a first change runs when a second one is journaled: the
    journal then keeps the second (it is not in the files yet), until its own write."""
    state, registry, _, journal = journaled
    registry.gate = threading.Event()
    state.put_nowait(("record", KEY, "s1"))
    flushed = asyncio.create_task(state.flush())
    assert await asyncio.to_thread(registry.entered.wait, 10)
    state.put_nowait(("remove", OTHER, ""))
    registry.gate.set()
    await asyncio.wait_for(flushed, 10)
    assert registry.ops() == [("record", KEY)]
    assert lines(journal) == [("remove", OTHER)]
    await asyncio.wait_for(state.flush(), 10)
    assert registry.ops() == [("record", KEY), ("remove", OTHER)]
    assert lines(journal) == []


async def test_after_a_failed_registry_write_the_journal_keeps_every_change(
    journaled: Any,
) -> None:
    """The session files cannot be written (a full disk): the journal keeps the change (a
    restart would fold it in), and the next write, once the disk has room, writes it."""
    state, registry, _, journal = journaled
    registry.fail = True
    state.put_nowait(("record", KEY, "s1"))
    await asyncio.wait_for(state.flush(), 10)
    assert registry.applied == [] and lines(journal) == [("record", KEY)]
    registry.fail = False
    state.put_nowait(("record", OTHER, "s2"))
    await asyncio.wait_for(state.flush(), 10)
    assert registry.ops() == [("record", OTHER)]  # (+ what the daemon knows: none here)
    assert lines(journal) == []


async def test_a_change_the_journal_cannot_take_is_written_at_once_and_waited_for(
    journaled: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appending to the changes journal fails (a full disk): the change goes to the
    session files at once, and the reply's join waits for that write, as without it."""
    state, registry, _, journal = journaled

    def full(_record: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal, "append", full)
    registry.gate = threading.Event()
    state.put_nowait(("record", KEY, "s1"))
    await _join_waits_for_the_write(state, registry, registry.entered)


async def test_the_changes_journal_is_synced_with_the_ledger_in_one_pass(
    journaled: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new session and a ledger line in one burst: one pass of the sync lane
    fdatasyncs both; a burst without journaled changes syncs the ledger alone."""
    monkeypatch.setattr(statewriter, "JOURNAL_SYNC_DELAY_S", 0.05)
    state, _, ledger, journal = journaled
    synced: list[str] = []
    monkeypatch.setattr(journal, "sync", lambda: synced.append("changes"))
    state.put_nowait(("record", KEY, "s1"))
    state.ledger_changed()
    await asyncio.wait_for(state._to_sync.join(), 10)
    assert synced == ["changes"] and ledger.syncs == 1
    state.ledger_changed()
    await asyncio.wait_for(state._to_sync.join(), 10)
    assert synced == ["changes"] and ledger.syncs == 2


async def test_a_stop_writes_what_waits_and_leaves_the_journal_empty(journaled: Any) -> None:
    """A clean stop: the waiting session and touch reach the session files at once (not
    after the delay), the journal is left empty and closed; nothing is folded next time."""
    state, registry, ledger, journal = journaled
    state.put_nowait(("record", KEY, "s1"))
    state.put_nowait(("touch", KEY, "s1"))
    await asyncio.wait_for(state.close(), 10)  # REGISTRY_DELAY_S is 30 s
    assert registry.ops() == [("record", KEY), ("touch", KEY)]
    assert lines(journal) == [] and ledger.closed
    assert journal._fd is None


async def test_a_write_of_touches_alone_leaves_the_journal_file_alone(journaled: Any) -> None:
    """Touches are not journaled: writing them does not rewrite an empty journal (a temp
    file and two fsyncs for nothing, every 30 s of a busy thread)."""
    state, registry, _, journal = journaled
    state.put_nowait(("touch", KEY, "s1"))
    await asyncio.wait_for(state.flush(), 10)
    assert registry.ops() == [("touch", KEY)] and not journal.path.exists()
    state.put_nowait(("record", KEY, "s2"))
    await asyncio.wait_for(state.flush(), 10)
    emptied = journal.path.stat().st_ino
    state.put_nowait(("touch", KEY, "s2"))
    await asyncio.wait_for(state.flush(), 10)
    assert journal.path.stat().st_ino == emptied and lines(journal) == []
