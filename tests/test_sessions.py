"""SessionRegistry: upstream file formats, preservation, locking across processes."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from claudeclaw.errors import InvalidKeyError, StateError
from claudeclaw.model import GLOBAL_KEY, SessionKey, Workspace, job_key, session_key
from claudeclaw.paths import ProjectPaths
from claudeclaw.sessions import SessionRegistry, utc_now_iso

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
THREAD = SessionKey("1234567890123456789")


@pytest.fixture
def paths(tmp_path: Path) -> ProjectPaths:
    return ProjectPaths(tmp_path)


@pytest.fixture
def reg(paths: ProjectPaths) -> SessionRegistry:
    return SessionRegistry(paths)


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def test_utc_now_iso_matches_js_to_iso_string() -> None:
    assert ISO_Z.fullmatch(utc_now_iso())


def test_empty_registry(reg: SessionRegistry, paths: ProjectPaths) -> None:
    assert reg.get(THREAD) is None
    assert reg.get(GLOBAL_KEY) is None
    assert reg.list() == []
    assert reg.touch(THREAD) is None
    assert reg.remove(THREAD) is None
    assert not paths.thread_sessions_file.exists()
    assert not paths.global_session_file.exists()


def test_thread_record_written_in_upstream_shape(reg: SessionRegistry, paths: ProjectPaths) -> None:
    rec = reg.record(THREAD, "uuid-1")
    assert rec.key == THREAD and rec.session_id == "uuid-1" and rec.turn_count == 0
    doc = read(paths.thread_sessions_file)
    assert list(doc) == ["threads"]
    entry = doc["threads"][THREAD]
    assert list(entry) == [
        "sessionId",
        "threadId",
        "createdAt",
        "lastUsedAt",
        "turnCount",
        "compactWarned",
    ]
    assert entry["sessionId"] == "uuid-1" and entry["threadId"] == THREAD
    assert ISO_Z.fullmatch(entry["createdAt"]) and entry["lastUsedAt"] == entry["createdAt"]
    assert entry["turnCount"] == 0 and entry["compactWarned"] is False
    assert stat.S_IMODE(paths.thread_sessions_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.state_dir.stat().st_mode) == 0o700
    assert not paths.global_session_file.exists()


def test_global_record_written_in_upstream_shape(reg: SessionRegistry, paths: ProjectPaths) -> None:
    reg.record(GLOBAL_KEY, "g-1")
    doc = read(paths.global_session_file)
    assert list(doc) == ["sessionId", "createdAt", "lastUsedAt", "turnCount", "compactWarned"]
    assert doc["sessionId"] == "g-1"
    assert not paths.thread_sessions_file.exists()
    assert reg.get(GLOBAL_KEY) is not None
    assert reg.list() == []  # list() is thread sessions only


def test_reads_hand_written_upstream_files(reg: SessionRegistry, paths: ProjectPaths) -> None:
    paths.state_dir.mkdir(parents=True)
    paths.global_session_file.write_text(
        json.dumps(
            {
                "sessionId": "g-uuid",
                "createdAt": "2026-03-01T10:00:00.000Z",
                "lastUsedAt": "2026-03-02T10:00:00.000Z",
                "turnCount": 7,
                "compactWarned": True,
                "messageCount": 12,
            },
            indent=2,
        )
    )
    paths.thread_sessions_file.write_text(
        json.dumps(
            {
                "threads": {
                    "1111": {
                        "sessionId": "t-uuid",
                        "threadId": "1111",
                        "createdAt": "2026-03-01T10:00:00.000Z",
                        "lastUsedAt": "2026-03-03T10:00:00.000Z",
                        "turnCount": 10,
                        "compactWarned": False,
                    },
                    "daily-report": {"sessionId": "job-uuid", "threadId": "daily-report"},
                    "agent:ops": {"sessionId": "agent-uuid"},
                    "2222": {"sessionId": "", "threadId": "2222"},  # placeholder: no session
                    "3333": {"sessionId": "old-uuid", "createdAt": "2026-01-01T00:00:00.000Z"},
                }
            },
            indent=2,
        )
    )
    g = reg.get(GLOBAL_KEY)
    assert g is not None
    assert (g.session_id, g.turn_count, g.compact_warned) == ("g-uuid", 7, True)
    assert g.last_used_at == "2026-03-02T10:00:00.000Z"
    t = reg.get(SessionKey("1111"))
    assert t is not None and t.session_id == "t-uuid" and t.turn_count == 10
    assert reg.get(SessionKey("2222")) is None
    old = reg.get(SessionKey("3333"))  # missing fields: defaults
    assert old is not None and old.turn_count == 0 and old.last_used_at == old.created_at
    assert [r.key for r in reg.list()] == ["1111", "3333"]
    # Reads never write.
    assert not (paths.state_dir / "sessions.json.bak").exists()


def test_unknown_entries_and_fields_preserved(reg: SessionRegistry, paths: ProjectPaths) -> None:
    paths.state_dir.mkdir(parents=True)
    original = {
        "threads": {
            "daily-report": {"sessionId": "job-uuid", "threadId": "daily-report", "x": 1},
            "1111": {"sessionId": "t-uuid", "threadId": "1111", "turnCount": 1, "cwd": "/a"},
        },
        "version": 3,
    }
    paths.thread_sessions_file.write_text(json.dumps(original))
    paths.global_session_file.write_text(json.dumps({"sessionId": "g", "messageCount": 4}))

    reg.touch(SessionKey("1111"))
    reg.record(SessionKey("4444"), "new")
    reg.touch(GLOBAL_KEY)

    doc = read(paths.thread_sessions_file)
    assert doc["version"] == 3
    assert doc["threads"]["daily-report"] == original["threads"]["daily-report"]
    assert doc["threads"]["1111"]["cwd"] == "/a"
    assert doc["threads"]["1111"]["turnCount"] == 2
    assert list(doc["threads"]) == ["daily-report", "1111", "4444"]
    g = read(paths.global_session_file)
    assert g["messageCount"] == 4 and g["turnCount"] == 1

    # A new id for a key keeps unknown fields but starts a fresh record.
    rec = reg.record(SessionKey("1111"), "t-uuid-2")
    assert rec.turn_count == 0
    entry = read(paths.thread_sessions_file)["threads"]["1111"]
    assert entry["cwd"] == "/a" and entry["sessionId"] == "t-uuid-2" and entry["turnCount"] == 0
    reg.record(GLOBAL_KEY, "g2")
    assert read(paths.global_session_file)["messageCount"] == 0


def test_record_same_id_is_unchanged(reg: SessionRegistry, paths: ProjectPaths) -> None:
    first = reg.record(THREAD, "uuid-1")
    reg.touch(THREAD)
    before = paths.thread_sessions_file.read_bytes()
    again = reg.record(THREAD, "uuid-1")
    assert paths.thread_sessions_file.read_bytes() == before
    assert again.turn_count == 1 and again.created_at == first.created_at


def test_touch_increments_and_updates_last_used(reg: SessionRegistry) -> None:
    reg.record(THREAD, "uuid-1")
    for expected in (1, 2, 3):
        rec = reg.touch(THREAD)
        assert rec is not None and rec.turn_count == expected
    got = reg.get(THREAD)
    assert got is not None and got.turn_count == 3
    assert ISO_Z.fullmatch(got.last_used_at) and got.last_used_at >= got.created_at
    reg.record(GLOBAL_KEY, "g")
    g = reg.touch(GLOBAL_KEY)
    assert g is not None and g.turn_count == 1


def test_remove(reg: SessionRegistry, paths: ProjectPaths) -> None:
    reg.record(THREAD, "uuid-1")
    reg.record(SessionKey("42"), "uuid-2")
    removed = reg.remove(THREAD)
    assert removed is not None and removed.session_id == "uuid-1"
    assert reg.get(THREAD) is None
    assert list(read(paths.thread_sessions_file)["threads"]) == ["42"]
    assert reg.remove(THREAD) is None

    reg.record(GLOBAL_KEY, "g")
    assert reg.remove(GLOBAL_KEY) is not None
    assert not paths.global_session_file.exists()
    assert reg.get(GLOBAL_KEY) is None


@pytest.mark.parametrize("bad", ["../x", "12a", "", "global/..", "-1", "1" * 21])
def test_invalid_keys_rejected(reg: SessionRegistry, paths: ProjectPaths, bad: str) -> None:
    for call in (reg.get, reg.touch, reg.remove):
        with pytest.raises(InvalidKeyError):
            call(SessionKey(bad))
    with pytest.raises(InvalidKeyError):
        reg.record(SessionKey(bad), "uuid")
    assert not paths.state_dir.exists()


def test_empty_session_id_refused(reg: SessionRegistry) -> None:
    with pytest.raises(ValueError):
        reg.record(THREAD, "")


def test_no_stale_cache_between_instances(paths: ProjectPaths) -> None:
    a, b = SessionRegistry(paths), SessionRegistry(paths)
    a.record(THREAD, "uuid-1")
    assert b.get(THREAD) is not None
    b.remove(THREAD)
    assert a.get(THREAD) is None


async def test_get_or_create(reg: SessionRegistry) -> None:
    calls = 0

    async def create() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return f"made-{calls}"

    results = await asyncio.gather(*(reg.get_or_create(THREAD, create) for _ in range(5)))
    assert calls == 1
    assert {r.session_id for r in results} == {"made-1"}
    again = await reg.get_or_create(THREAD, create)
    assert again.session_id == "made-1" and calls == 1
    assert reg._creating == {}


def test_corrupt_sessions_json_recovered_from_bak(
    reg: SessionRegistry, paths: ProjectPaths
) -> None:
    reg.record(THREAD, "uuid-1")
    reg.record(SessionKey("42"), "uuid-2")  # sessions.json.bak now holds uuid-1 only
    paths.thread_sessions_file.write_text('{"threads": {"12')  # torn by a crash
    with capture_logs() as logs:
        got = reg.get(THREAD)
    assert got is not None and got.session_id == "uuid-1"
    aside = list(paths.state_dir.glob("sessions.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == '{"threads": {"12'
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["file"] == str(paths.thread_sessions_file)
    assert errors[0]["corrupt_copy"] == str(aside[0])
    assert errors[0]["restored_from"].endswith("sessions.json.bak")
    # The restored file is used from now on.
    assert read(paths.thread_sessions_file)["threads"][THREAD]["sessionId"] == "uuid-1"
    reg.touch(THREAD)


def test_corrupt_without_bak_refuses(reg: SessionRegistry, paths: ProjectPaths) -> None:
    paths.state_dir.mkdir(parents=True)
    paths.thread_sessions_file.write_text('{"threads": []}')  # wrong shape
    with pytest.raises(StateError, match=r"sessions\.json"):
        reg.record(THREAD, "x")
    assert paths.thread_sessions_file.read_text() == '{"threads": []}'


def _writer(root: str, start: int, count: int, go: Any) -> None:
    reg = SessionRegistry(ProjectPaths(Path(root)))
    go.wait(60)  # both processes start writing at the same moment
    for i in range(start, start + count):
        reg.record(SessionKey(str(i)), f"uuid-{i}")
        reg.touch(SessionKey(str(i)))


def test_two_processes_lose_nothing(paths: ProjectPaths) -> None:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [
        ctx.Process(target=_writer, args=(str(paths.root), start, 50, go)) for start in (1000, 2000)
    ]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(timeout=90)
        assert p.exitcode == 0
    doc = read(paths.thread_sessions_file)
    expected = {str(i) for i in (*range(1000, 1050), *range(2000, 2050))}
    assert set(doc["threads"]) == expected
    for k in expected:
        assert doc["threads"][k]["sessionId"] == f"uuid-{k}"
        assert doc["threads"][k]["turnCount"] == 1
    assert len(SessionRegistry(paths).list()) == 100


@pytest.mark.parametrize(
    "bad", ["job:", "job:../x", "job:a/b", "job:.hidden", "job:-x", "job:a b", "job:" + "a" * 65]
)
def test_job_keys_are_validated(bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        session_key(bad)


def test_job_keys_are_stored_like_thread_keys(reg: SessionRegistry, paths: ProjectPaths) -> None:
    key = job_key("daily-report")
    assert key == "job:daily-report"
    reg.record(key, "job-uuid")
    assert read(paths.thread_sessions_file)["threads"]["job:daily-report"]["sessionId"] == (
        "job-uuid"
    )
    assert [r.key for r in reg.list()] == ["job:daily-report"]


def test_a_thread_workspace_is_an_added_field_of_its_session(
    reg: SessionRegistry, paths: ProjectPaths
) -> None:
    ws = Workspace("/p/.claude/claudeclaw/worktrees/1", "claudeclaw/1-x", "main", "a" * 40)
    change = ("workspace", THREAD, json.dumps(ws.to_json()))
    reg.apply([change])  # no session yet: no placeholder entry is written
    assert not paths.thread_sessions_file.exists()
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    paths.thread_sessions_file.write_text(
        json.dumps({"threads": {THREAD: {"sessionId": "s1", "threadId": THREAD, "extra": 7}}})
    )
    reg.apply([change, ("workspace", GLOBAL_KEY, json.dumps(ws.to_json()))])
    entry = read(paths.thread_sessions_file)["threads"][THREAD]
    assert entry["sessionId"] == "s1" and entry["extra"] == 7  # the original's fields stay
    assert entry["workspace"] == {
        "path": ws.path,
        "branch": ws.branch,
        "base": "main",
        "baseCommit": "a" * 40,
    }
    rec = reg.get(THREAD)
    assert rec is not None and rec.workspace == ws
    assert not paths.global_session_file.exists()
    # a new session id (context reset) keeps the thread's directory
    renewed = reg.record(THREAD, "s2")
    assert renewed.workspace == ws and renewed.turn_count == 0
    assert [r.workspace for r in reg.list()] == [ws]
    reg.remove(THREAD)
    assert THREAD not in read(paths.thread_sessions_file)["threads"]


def test_a_malformed_workspace_field_is_ignored(reg: SessionRegistry, paths: ProjectPaths) -> None:
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    paths.thread_sessions_file.write_text(
        json.dumps({"threads": {THREAD: {"sessionId": "s1", "workspace": {"path": 3}}}})
    )
    rec = reg.get(THREAD)
    assert rec is not None and rec.session_id == "s1" and rec.workspace is None


def test_wrongly_typed_entries_are_named_on_load_and_the_rest_kept(
    reg: SessionRegistry, paths: ProjectPaths
) -> None:
    """A sessionId that is not a string (a hand edit, another tool) is warned about with
    its fix and skipped; the other entries still load; nothing is rewritten."""
    reg.record(THREAD, "uuid-good")
    doc = read(paths.thread_sessions_file)
    doc["threads"]["42"] = {"sessionId": 12345, "threadId": "42", "turnCount": 3}
    doc["threads"]["43"] = ["not", "an", "object"]
    doc["threads"]["daily-report"] = {"sessionId": "", "note": "job entry"}
    paths.thread_sessions_file.write_text(json.dumps(doc))
    before = paths.thread_sessions_file.read_text()
    with capture_logs() as logs:
        problems = reg.validate()
    assert len(problems) == 2 and "'42': sessionId is a int" in problems[0]
    warned = [e for e in logs if e["event"] == "sessions.entry_invalid"]
    assert [e["session_key"] for e in warned] == ["42", "43"]
    assert "remove the entry" in warned[0]["fix"]
    assert [r.session_id for r in reg.list()] == ["uuid-good"]
    assert paths.thread_sessions_file.read_text() == before


def test_a_mistyped_session_id_is_repaired_from_what_the_daemon_knows(
    reg: SessionRegistry, paths: ProjectPaths
) -> None:
    """The daemon holds the session in memory while the file's id was mangled: its next
    turn writes the id back (turns kept), so a restart does not lose the context."""
    reg.record(THREAD, "uuid-1")
    reg.touch(THREAD)
    doc = read(paths.thread_sessions_file)
    doc["threads"][THREAD]["sessionId"] = ["uuid-1"]
    paths.thread_sessions_file.write_text(json.dumps(doc))
    with capture_logs() as logs:
        reg.apply([("touch", THREAD, "uuid-1")])
    record = reg.get(THREAD)
    assert record is not None and record.session_id == "uuid-1" and record.turn_count == 2
    assert any(e["event"] == "sessions.entry_repaired" for e in logs)


def _journal(paths: ProjectPaths, *lines: str) -> None:
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    paths.session_changes_file.write_text("".join(line + "\n" for line in lines))


def test_fold_changes_writes_what_a_killed_daemon_journaled(
    reg: SessionRegistry, paths: ProjectPaths
) -> None:
    """A daemon killed between journaling its changes and writing them: the next start
    (or an offline command) writes them into the session files, in order, and removes
    the journal; an idempotent replay (record, workspace, remove) and the global file too."""
    reg.record(THREAD, "old")
    other = SessionKey("2234567890123456789")
    workspace = json.dumps({"cwd": "/w", "branch": "b", "repo": "/r", "base": "main"})
    _journal(
        paths,
        json.dumps({"op": "record", "key": THREAD, "value": "new"}),
        json.dumps({"op": "record", "key": other, "value": "s2"}),
        json.dumps({"op": "workspace", "key": other, "value": workspace}),
        json.dumps({"op": "record", "key": GLOBAL_KEY, "value": "g1"}),
        json.dumps({"op": "remove", "key": other, "value": ""}),
        json.dumps({"op": "record", "key": other, "value": "s3"}),
    )
    with capture_logs() as logs:
        assert reg.fold_changes() == 6
    assert not paths.session_changes_file.exists()
    assert [(r.key, r.session_id) for r in reg.list()] == [(THREAD, "new"), (other, "s3")]
    assert reg.get(GLOBAL_KEY).session_id == "g1"  # type: ignore[union-attr]
    assert [e["count"] for e in logs if e["event"] == "sessions.changes_folded"] == [6]
    assert reg.fold_changes() == 0  # nothing left: the files are not written again


def test_fold_changes_skips_a_torn_last_line_and_keeps_a_bad_file_aside(
    reg: SessionRegistry, paths: ProjectPaths
) -> None:
    """A last line cut short by the kill is skipped quietly; a line that is no change
    (another key shape, not JSON) is logged and the file kept aside before the rest is
    written."""
    _journal(
        paths,
        json.dumps({"op": "record", "key": THREAD, "value": "s1"}),
        json.dumps({"op": "record", "key": "../etc", "value": "x"}),
        "not json",
    )
    with paths.session_changes_file.open("a") as fh:
        fh.write('{"op": "rec')  # torn
    with capture_logs() as logs:
        assert reg.fold_changes() == 1
    assert reg.get(THREAD).session_id == "s1"  # type: ignore[union-attr]
    [skipped] = [e for e in logs if e["event"] == "journal.lines_skipped"]
    assert skipped["count"] == 2
    aside = Path(skipped["kept_as"])
    assert "../etc" in aside.read_text() and stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert not paths.session_changes_file.exists()


def test_an_unreadable_changes_journal_stops_the_fold(
    reg: SessionRegistry, paths: ProjectPaths
) -> None:
    paths.session_changes_file.mkdir(parents=True)  # reading it fails: not "not found"
    with pytest.raises(StateError, match="session changes not written yet"):
        reg.fold_changes()
