"""The pending ledger owns "delivered or not": an entry leaves only when the frontend says
its answer is posted, and a stored answer survives a restart."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from claudeclaw import journal
from claudeclaw.errors import StateError
from claudeclaw.ledger import PendingLedger, read_entries
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
    ledger, changes = _ledger(tmp_path / "pending.jsonl")
    ledger.accept(_item("m1"))
    ledger.note_event(RunStarted("m1", "r", 123, resumed=False))
    done = RunDone("m1", reply="the answer", session_id="s")
    assert ledger.settle(done) == done
    assert ledger.accepted["m1"].answer == done and ledger.accepted["m1"].started
    # each change was appended as it happened: no sync, no close (a kill -9 now)

    again, _ = _ledger(tmp_path / "pending.jsonl")  # a restart before it was posted
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
    ledger, changes = _ledger(tmp_path / "pending.jsonl")
    ledger.accept(_item("m1"), starts_at_once=True)
    assert ledger.snapshot()[0]["started"] is True and len(changes) == 1
    ledger.note_event(RunStarted("m1", "r", 123, resumed=False))
    assert len(changes) == 1  # nothing new to write
    ledger.settle(RunDone("m1", reply="ok", session_id="s"))
    ledger.delivered("m1")
    assert len(changes) == 3  # accept, answer, delivered


def test_a_stop_before_a_marked_message_began_keeps_it_to_run_again(tmp_path: Path) -> None:
    ledger, _ = _ledger(tmp_path / "pending.jsonl")
    ledger.accept(_item("m1"), starts_at_once=True)
    kept = ledger.settle(RunFailed("m1", "shutdown", "stopping"))  # claude never began it
    assert isinstance(kept, RunFailed) and kept.reason == "kept"
    assert ledger.snapshot()[0]["started"] is False  # the restart runs it

    ledger.accept(_item("m2", "43"), starts_at_once=True)
    ledger.note_event(RunStarted("m2", "r", 123, resumed=False))
    failed = ledger.settle(RunFailed("m2", "shutdown", "stopping"))  # it had begun
    assert failed.reason == "shutdown" and ledger.accepted["m2"].started


def test_a_message_a_stop_kept_from_starting_waits_without_an_answer(tmp_path: Path) -> None:
    ledger, _ = _ledger(tmp_path / "pending.jsonl")
    ledger.accept(_item("m1"))
    ledger.note_event(RunStarted("m1", "r", 123, resumed=False))
    ledger.note_event(RunQueued("m1", 0, waiting_for_slot=True, resets_at="2026-12-01T15:00:00Z"))
    assert not ledger.accepted["m1"].started  # refused by the usage limit: it may run again
    kept = ledger.settle(RunFailed("m1", "shutdown", "stopping"))
    assert isinstance(kept, RunFailed) and kept.reason == "kept"
    assert ledger.accepted["m1"].answer is None
    assert "answer" not in json.dumps(ledger.snapshot())  # the file format, as before


def test_a_resubmitted_recovered_message_replaces_its_old_entry(tmp_path: Path) -> None:
    """An earlier version's pending.json is folded into the journal and removed; a
    message submitted again replaces its recovered entry, in the file too."""
    legacy = tmp_path / "pending.json"
    legacy.write_text(json.dumps([_item("old", "42").to_json(), _item("other", "43").to_json()]))
    ledger, _ = _ledger(tmp_path / "pending.jsonl")
    assert [r.msg_id for r in ledger.read()] == ["old", "other"]
    assert not legacy.exists()
    ledger.accept(_item("new", "42"))
    assert [r.msg_id for r in ledger.recovered] == ["other"]
    assert [e["msg_id"] for e in ledger.snapshot()] == ["other", "new"]
    assert [e["msg_id"] for e in read_entries(ledger.path)] == ["other", "new"]


def test_a_line_cut_short_by_a_crash_is_skipped_and_a_bad_line_kept_aside(
    tmp_path: Path,
) -> None:
    """1. A journal with a good entry, a line of garbage, a second good entry and a last
    line cut short (the daemon died mid-write).
    Result: both good entries are recovered; the file with the garbage is kept aside,
    mode 0600, and named in the log; the torn line is only warned about."""
    path = tmp_path / "pending.jsonl"
    lines = [
        json.dumps({"put": _item("m1", "41").to_json()}),
        "{not json",
        json.dumps({"put": _item("m2", "42").to_json()}),
        json.dumps({"put": _item("m3", "43").to_json()})[:40],
    ]
    path.write_text("\n".join(lines))
    ledger, _ = _ledger(path)
    with capture_logs() as caplog_json:
        assert [r.msg_id for r in ledger.read()] == ["m1", "m2"]
    [aside] = list(tmp_path.glob("pending.jsonl.corrupt-*"))
    assert "{not json" in aside.read_text() and stat.S_IMODE(aside.stat().st_mode) == 0o600
    [skipped] = [e for e in caplog_json if e["event"] == "journal.lines_skipped"]
    assert skipped["kept_as"] == str(aside) and "line 2" in skipped["problems"][0]
    assert any(e["event"] == "journal.torn_line_skipped" for e in caplog_json)
    assert [e["msg_id"] for e in read_entries(path)] == ["m1", "m2"]  # rewritten clean
    assert "{not json" not in path.read_text()


def test_the_journal_is_rewritten_when_it_has_grown_keeping_lines_appended_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "COMPACT_MIN_BYTES", 4096)
    ledger, _ = _ledger(tmp_path / "pending.jsonl")
    ledger.read()
    ledger.accept(_item("kept", "1"))
    n = 0
    while not ledger.journal.wants_rewrite():
        ledger.accept(_item(f"m{n}", str(100 + n)))
        ledger.delivered(f"m{n}")
        n += 1
    job = ledger.sync_job()  # the entries are taken now, on the loop
    ledger.accept(_item("during", "2"))  # appended while the thread writes
    assert ledger.sync_job() == ledger.journal.sync  # one rewrite at a time
    job()
    assert [e["msg_id"] for e in read_entries(ledger.path)] == ["kept", "during"]
    assert ledger.path.stat().st_size < 4096 and not ledger.journal.wants_rewrite()
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600
    ledger.delivered("kept")  # appends go to the new file
    assert [e["msg_id"] for e in read_entries(ledger.path)] == ["during"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_append_does_not_stop_the_message_and_the_next_sync_rewrites_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk is full for one append: it is logged, the ledger keeps the fact in
    memory, and the next sync writes the whole ledger again."""
    ledger, _ = _ledger(tmp_path / "pending.jsonl")
    ledger.read()
    ledger.accept(_item("m1", "1"))
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, bytes(data[:10]))  # half a line reached the file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(journal.os, "write", full_disk)
    with capture_logs() as caplog_json:
        ledger.settle(RunDone("m1", reply="the answer", session_id="s"))
    assert ledger.accepted["m1"].answer is not None
    assert any(e["event"] == "ledger.write_failed" for e in caplog_json)
    ledger.accept(_item("m2", "2"))  # on a line of its own, after the half one
    monkeypatch.setattr(journal.os, "write", real_write)
    ledger.sync_job()()  # a rewrite, not just a sync
    entries = read_entries(ledger.path)
    assert [e["msg_id"] for e in entries] == ["m1", "m2"]
    assert entries[0]["answer"]["reply"] == "the answer"
    assert not ledger.journal.broken


def test_a_full_disk_at_start_keeps_what_was_recovered_and_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal cannot be rewritten at start (ENOSPC): the daemon still starts with the
    recovered messages, an earlier version's pending.json stays, and the next sync writes
    everything once the disk has room."""
    legacy = tmp_path / "pending.json"
    legacy.write_text(json.dumps([_item("old", "42").to_json()]))
    ledger, _ = _ledger(tmp_path / "pending.jsonl")
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.os, "fsync", full)
    with capture_logs() as logs:
        assert [r.msg_id for r in ledger.read()] == ["old"]
    assert any(e["event"] == "ledger.write_failed" for e in logs)
    assert legacy.exists() and ledger.journal.broken
    assert not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setattr(journal.os, "fsync", real_fsync)
    ledger.sync_job()()
    assert [e["msg_id"] for e in read_entries(ledger.path)] == ["old"]
    assert not legacy.exists()  # folded in: a restart must not read it again


def test_a_rewrite_that_fails_before_its_rename_leaves_the_journal_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction dies at its rename (EIO): the journal it was replacing still holds
    every entry, lines appended during it included, and later appends still land."""
    monkeypatch.setattr(journal, "COMPACT_MIN_BYTES", 1024)
    ledger, _ = _ledger(tmp_path / "pending.jsonl")
    ledger.read()
    n = 0
    while not ledger.journal.wants_rewrite():
        ledger.accept(_item(f"m{n}", str(n)))
        n += 1
    job = ledger.sync_job()
    ledger.accept(_item("during", "99"))

    def broken_rename(src: str, dst: str) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(journal.os, "replace", broken_rename)
    with pytest.raises(OSError):
        job()
    monkeypatch.undo()
    ledger.accept(_item("after", "100"))
    expected = [f"m{i}" for i in range(n)] + ["during", "after"]
    assert [e["msg_id"] for e in read_entries(ledger.path)] == expected
    assert not list(tmp_path.glob(".*.tmp"))
    ledger.sync_job()()  # the next sync tries the rewrite again, and it takes
    assert [e["msg_id"] for e in read_entries(ledger.path)] == expected


def test_a_journal_that_cannot_be_read_stops_the_start_with_the_fix(tmp_path: Path) -> None:
    """pending.jsonl is there but unreadable (here: a directory; as root a mode would not
    stop the read). Result: StateError naming the file and the fix, and nothing is
    rewritten over it (the messages it keeps are not dropped)."""
    path = tmp_path / "pending.jsonl"
    path.mkdir()
    ledger, _ = _ledger(path)
    with pytest.raises(StateError, match=r"cannot read .*pending\.jsonl.*Fix: .*chmod 600"):
        ledger.read()
    assert path.is_dir()


def test_a_bad_journal_whose_copy_cannot_be_kept_is_not_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pending.jsonl"
    original = json.dumps({"put": _item("m1").to_json()}) + "\n{garbage\n"
    path.write_text(original)

    def full(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.shutil, "copyfile", full)
    ledger, _ = _ledger(path)
    with pytest.raises(StateError, match=r"could not be kept.*Fix: free disk space"):
        ledger.read()
    assert path.read_text() == original
