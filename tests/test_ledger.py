"""The pending ledger owns "delivered or not": an entry leaves only when the frontend says
its answer is posted, and a stored answer survives a restart."""

from __future__ import annotations

import json
from pathlib import Path

from claudeclaw.ledger import PendingLedger
from claudeclaw.model import (
    PendingMessage,
    ReplyTo,
    RunDone,
    RunFailed,
    RunQueued,
    RunStarted,
    SessionKey,
)


def _item(msg_id: str, message_id: str = "42") -> PendingMessage:
    return PendingMessage(
        msg_id,
        SessionKey("global"),
        "hi",
        "discord",
        ReplyTo("7", message_id),
        "2026-12-01T00:00:00Z",
    )


def _ledger(path: Path) -> tuple[PendingLedger, list[int]]:
    changes: list[int] = []
    return PendingLedger(path, lambda: changes.append(1)), changes


def test_an_answered_message_stays_until_the_frontend_posted_it(tmp_path: Path) -> None:
    ledger, changes = _ledger(tmp_path / "pending.json")
    ledger.accept(_item("m1"))
    ledger.note_event(RunStarted("m1", "r", 123, resumed=False))
    done = RunDone("m1", reply="the answer", session_id="s")
    assert ledger.settle(done) == done
    assert ledger.accepted["m1"].answer == done and ledger.accepted["m1"].started
    ledger.write(ledger.snapshot())

    again, _ = _ledger(tmp_path / "pending.json")  # a restart before it was posted
    [recovered] = again.read()
    assert recovered.answer == done
    assert again.take_recovered() == [recovered] and again.take_recovered() == []
    again.delivered("m1")
    assert again.recovered == [] and again.snapshot() == []

    ledger.delivered("m1")
    assert ledger.accepted == {} and len(changes) == 4  # accept, started, answer, delivered


def test_a_message_handed_over_with_its_slot_is_written_started_at_once(tmp_path: Path) -> None:
    """One durable write fewer per message, and the started mark is on disk with the
    message itself rather than some milliseconds after claude began."""
    ledger, changes = _ledger(tmp_path / "pending.json")
    ledger.accept(_item("m1"), starts_at_once=True)
    assert ledger.snapshot()[0]["started"] is True and len(changes) == 1
    ledger.note_event(RunStarted("m1", "r", 123, resumed=False))
    assert len(changes) == 1  # nothing new to write
    ledger.settle(RunDone("m1", reply="ok", session_id="s"))
    ledger.delivered("m1")
    assert len(changes) == 3  # accept, answer, delivered


def test_a_stop_before_a_marked_message_began_keeps_it_to_run_again(tmp_path: Path) -> None:
    ledger, _ = _ledger(tmp_path / "pending.json")
    ledger.accept(_item("m1"), starts_at_once=True)
    kept = ledger.settle(RunFailed("m1", "shutdown", "stopping"))  # claude never began it
    assert isinstance(kept, RunFailed) and kept.reason == "kept"
    assert ledger.snapshot()[0]["started"] is False  # the restart runs it

    ledger.accept(_item("m2", "43"), starts_at_once=True)
    ledger.note_event(RunStarted("m2", "r", 123, resumed=False))
    failed = ledger.settle(RunFailed("m2", "shutdown", "stopping"))  # it had begun
    assert failed.reason == "shutdown" and ledger.accepted["m2"].started


def test_a_message_a_stop_kept_from_starting_waits_without_an_answer(tmp_path: Path) -> None:
    ledger, _ = _ledger(tmp_path / "pending.json")
    ledger.accept(_item("m1"))
    ledger.note_event(RunStarted("m1", "r", 123, resumed=False))
    ledger.note_event(RunQueued("m1", 0, waiting_for_slot=True, resets_at="2026-12-01T15:00:00Z"))
    assert not ledger.accepted["m1"].started  # refused by the usage limit: it may run again
    kept = ledger.settle(RunFailed("m1", "shutdown", "stopping"))
    assert isinstance(kept, RunFailed) and kept.reason == "kept"
    assert ledger.accepted["m1"].answer is None
    assert "answer" not in json.dumps(ledger.snapshot())  # the file format, as before


def test_a_resubmitted_recovered_message_replaces_its_old_entry(tmp_path: Path) -> None:
    path = tmp_path / "pending.json"
    path.write_text(json.dumps([_item("old", "42").to_json(), _item("other", "43").to_json()]))
    ledger, _ = _ledger(path)
    ledger.read()
    ledger.accept(_item("new", "42"))
    assert [r.msg_id for r in ledger.recovered] == ["other"]
    assert [e["msg_id"] for e in ledger.snapshot()] == ["other", "new"]
