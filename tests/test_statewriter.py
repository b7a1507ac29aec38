"""The state writer: two lanes (registry, ledger) and turn touches that wait.

Unit tests with a recording registry and ledger; the daemon tests cover the real files.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from claudeclaw import statewriter
from claudeclaw.model import SessionKey
from claudeclaw.statewriter import Change, StateWriter

KEY = SessionKey("123456789012345678")
OTHER = SessionKey("223456789012345678")


class Registry:
    def __init__(self) -> None:
        self.applied: list[list[Change]] = []
        self.gate: threading.Event | None = None  # apply() blocks until it is set
        self.entered = threading.Event()
        self.wrote = threading.Event()  # set after each apply (clear it to wait for the next)

    def apply(self, changes: list[Change]) -> None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
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


@pytest.fixture
async def writer() -> Any:
    registry, ledger = Registry(), Ledger()
    state = StateWriter(registry, ledger, lambda: [])  # type: ignore[arg-type]
    task = asyncio.create_task(state.run())
    yield state, registry, ledger
    if registry.gate is not None:
        registry.gate.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


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
    assert registry.ops() == [("record", OTHER), ("touch", KEY)]


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
    monkeypatch.setattr(statewriter, "TOUCH_DELAY_S", 0.05)
    registry.wrote.clear()
    state.put_nowait(("touch", KEY, "s1"))
    assert await asyncio.to_thread(registry.wrote.wait, 10)
    assert registry.ops() == [("touch", KEY), ("touch", KEY)]


async def test_the_ledger_is_not_queued_behind_a_slow_registry_write(
    writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session write hangs (a slow disk); the ledger is synced meanwhile, and a join
    still waits for the session."""
    monkeypatch.setattr(statewriter, "LEDGER_SYNC_DELAY_S", 0.0)
    state, registry, ledger = writer
    registry.gate = threading.Event()
    state.put_nowait(("record", KEY, "s1"))
    await asyncio.to_thread(registry.entered.wait, 10)
    state.ledger_changed()
    joined = asyncio.create_task(state.join())
    assert await asyncio.to_thread(ledger.wrote.wait, 10)
    assert not joined.done() and not registry.applied
    registry.gate.set()
    await asyncio.wait_for(joined, 10)
    assert registry.ops() == [("record", KEY)]


async def test_ledger_lines_are_synced_together_and_at_once_at_a_stop(
    writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three ledger lines in a burst: one fdatasync for all of them (group commit). At a
    stop the sync does not wait out the delay, and the journal is closed."""
    monkeypatch.setattr(statewriter, "LEDGER_SYNC_DELAY_S", 0.05)
    state, _, ledger = writer
    for _ in range(3):
        state.ledger_changed()
    await asyncio.wait_for(state._ledger.join(), 10)  # all three taken by the lane
    assert ledger.syncs == 1
    monkeypatch.setattr(statewriter, "LEDGER_SYNC_DELAY_S", 60.0)
    state.ledger_changed()
    await asyncio.wait_for(state.close(), 10)  # not 60 s
    assert ledger.syncs >= 2 and ledger.closed
