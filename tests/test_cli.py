"""The ``claudeclaw`` command as a user runs it: a real subprocess each time."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from claudeclaw.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_NOT_RUNNING
from claudeclaw.paths import ProjectPaths


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "claudeclaw", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env or dict(os.environ),
        timeout=60,
    )


async def acli(*args: str) -> Any:
    """The same, without blocking the test's event loop (a daemon may run in it)."""
    return await asyncio.to_thread(cli, *args)


def test_init_writes_a_private_starter_and_refuses_to_overwrite(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    done = cli("init", "--project", str(project))
    assert done.returncode == 0, done.stderr
    paths = ProjectPaths.for_project(project)
    assert stat.S_IMODE(paths.settings_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.state_dir.stat().st_mode) == 0o700
    settings = json.loads(paths.settings_file.read_text())
    assert settings["discord"]["allowedUserIds"] == [] and "runner" in settings
    again = cli("init", "--project", str(project))
    assert again.returncode == EXIT_CONFIG
    assert "exists" in again.stderr or "overwrite" in again.stderr


def test_bad_settings_name_the_key_and_exit_3(tmp_path: Path) -> None:
    paths = ProjectPaths.for_project(tmp_path)
    paths.state_dir.mkdir(parents=True)
    paths.settings_file.write_text('{"limits": {"maxConcurrentRuns": "many"}}')
    done = cli("run", "--project", str(tmp_path))
    assert done.returncode == EXIT_CONFIG
    assert "limits.maxConcurrentRuns" in done.stderr
    assert "Traceback" not in done.stderr
    paths.settings_file.write_text('{"model": "x",\n  oops}')
    done = cli("doctor", "--project", str(tmp_path))
    assert done.returncode != 0 and "line 2" in done.stdout + done.stderr


def test_ask_runs_claude_and_resumes_then_reports_failure(make_project: Callable[..., Any]) -> None:
    paths = make_project()
    root = str(paths.root)
    first = cli("ask", "--project", root, "--thread", "123456789", "--", "--version")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "FAKE-REPLY turn=1 last=--version"  # text, not a flag
    second = cli("ask", "--project", root, "--thread", "123456789", "-q", "again")
    assert second.stdout.strip() == "FAKE-REPLY turn=2 last=again"
    listed = cli("sessions", "list", "--project", root, "--json")
    rows = json.loads(listed.stdout)
    assert [r["key"] for r in rows] == ["123456789"] and rows[0]["record"]["turn_count"] == 2
    failed = cli("ask", "--project", root, "ERROR:api500")
    assert failed.returncode == EXIT_FAILURE
    assert "run failed (error)" in failed.stderr and "API Error: 500" in failed.stderr
    removed = cli("sessions", "rm", "123456789", "--project", root)
    assert "removed" in removed.stdout
    assert cli("sessions", "show", "123456789", "--project", root).returncode == EXIT_FAILURE


def test_offline_commands_see_what_a_killed_daemon_journaled(
    make_project: Callable[..., Any],
) -> None:
    """A daemon was killed with a new thread's session only in its changes journal:
    `sessions list` without a daemon shows it (folded into sessions.json first), and
    `ask` in that thread resumes it."""
    paths = make_project()
    root = str(paths.root)
    first = cli("ask", "--project", root, "--thread", "123456789", "-q", "one")
    session = json.loads(cli("sessions", "list", "--project", root, "--json").stdout)[0]
    cli("sessions", "rm", "123456789", "--project", root)
    change = {"op": "record", "key": "123456789", "value": session["record"]["session_id"]}
    paths.session_changes_file.write_text(json.dumps(change) + "\n")
    rows = json.loads(cli("sessions", "list", "--project", root, "--json").stdout)
    assert first.returncode == 0 and [r["key"] for r in rows] == ["123456789"]
    assert not paths.session_changes_file.exists()
    paths.session_changes_file.write_text(json.dumps({**change, "key": "987654321"}) + "\n")
    again = cli("ask", "--project", root, "--thread", "987654321", "-q", "two")
    assert again.stdout.strip() == "FAKE-REPLY turn=2 last=two"


def test_commands_that_need_the_daemon_say_so(tmp_path: Path) -> None:
    for args in (["status"], ["send", "hi"], ["reload"]):
        done = cli(*args, "--project", str(tmp_path))
        assert done.returncode == EXIT_NOT_RUNNING, args
        assert "not running" in done.stderr and "Traceback" not in done.stderr


def test_project_before_or_after_the_subcommand(make_project: Callable[..., Any]) -> None:
    paths = make_project()
    cli("ask", "--project", str(paths.root), "-q", "hello")
    for args in (
        ["--project", str(paths.root), "sessions", "list", "--json"],
        ["sessions", "--project", str(paths.root), "list", "--json"],
        ["sessions", "list", "--project", str(paths.root), "--json"],
    ):
        done = cli(*args)
        assert [r["key"] for r in json.loads(done.stdout)] == ["global"], args


async def test_send_status_sessions_reload_through_the_daemon(
    daemon_process: Callable[..., Any], make_project: Callable[..., Any]
) -> None:
    """1. `claudeclaw run` in the background.
    2. `send` in a thread, twice (the second resumes); `ask` refuses meanwhile.
    3. `status --json` and `sessions list` show it; `reload` applies a new limit.
    4. A broken settings file makes `reload` fail and leaves the daemon as it was."""
    paths = make_project()
    root = str(paths.root)
    proc = daemon_process(paths)
    await proc.wait_ready()
    sent = await acli("send", "--project", root, "--thread", "42", "hello daemon")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "FAKE-REPLY turn=1 last=hello daemon"
    assert "claude started" in sent.stderr
    again = await acli("send", "--project", root, "--thread", "42", "-q", "again")
    assert again.stdout.strip() == "FAKE-REPLY turn=2 last=again"
    assert "nothing runs" in (await acli("cancel", "--project", root, "--thread", "42")).stdout
    refused = await acli("ask", "--project", root, "direct")
    assert refused.returncode == EXIT_FAILURE and "claudeclaw send" in refused.stderr

    status = json.loads((await acli("status", "--project", root, "--json")).stdout)
    assert status["daemon"]["pid"] == proc.proc.pid
    worker, *spares = status["workers"]
    assert worker["key"] == "42" and worker["session_id"]
    assert worker["claude_mode"] == "warm" and worker["claude_rss_bytes"] > 0
    # the next new thread's spare, with (once it is up) the claude it started ahead
    assert [(w["key"], w["state"]) for w in spares] in ([], [("", "spare")])
    for spare in spares:
        assert not spare["claude_pid"] or spare["claude_rss_bytes"] > 0
    human = await acli("status", "--project", root)
    assert "42" in human.stdout and "idle" in human.stdout
    assert "CLAUDE" in human.stdout and " warm " in human.stdout
    listed = await acli("sessions", "list", "--project", root)
    assert "42" in listed.stdout and "live" in listed.stdout

    settings = json.loads(paths.settings_file.read_text())
    settings["limits"]["maxConcurrentRuns"] = 3
    paths.settings_file.write_text(json.dumps(settings))
    reloaded = await acli("reload", "--project", root)
    assert reloaded.returncode == 0, reloaded.stderr
    status = json.loads((await acli("status", "--project", root, "--json")).stdout)
    assert status["daemon"]["limits"]["max_concurrent_runs"] == 3

    paths.settings_file.write_text('{"limits": {"maxWorkers": 0}}')
    broken = await acli("reload", "--project", root)
    assert broken.returncode != 0 and "limits.maxWorkers" in broken.stderr
    status = json.loads((await acli("status", "--project", root, "--json")).stdout)
    assert status["daemon"]["limits"]["max_concurrent_runs"] == 3  # the old settings stay
    proc.signal(15)
    assert await proc.wait_exit() == 0


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("claudeclaw ")


@pytest.mark.parametrize("text", ["-", "-x --y"])
def test_message_from_stdin_or_with_dashes(make_project: Callable[..., Any], text: str) -> None:
    paths = make_project()
    if text == "-":
        done = cli("ask", "--project", str(paths.root), "-q", "-", stdin="from stdin\nline 2")
        assert done.stdout.strip().endswith("last=from stdin\nline 2")
    else:
        done = cli("ask", "--project", str(paths.root), "-q", "--", *text.split())
        assert done.stdout.strip().endswith(f"last={text}")


async def test_jobs_list_run_and_heartbeat_run_through_the_daemon(
    daemon_process: Callable[..., Any], make_project: Callable[..., Any]
) -> None:
    """`jobs list [--json]` shows each job (and a bad file's error), `jobs run NAME` and
    `heartbeat run` print the reply; `status` names the next job; a job edited while the
    daemon runs is picked up at `reload`."""
    paths = make_project(heartbeat={"enabled": True, "interval": 60})
    root = str(paths.root)
    paths.jobs_dir.mkdir(parents=True)
    (paths.jobs_dir / "report.md").write_text(
        "---\nschedule: 0 9 * * mon-fri\nrecurring: true\n---\nwrite the report\n"
    )
    (paths.jobs_dir / "broken.md").write_text("---\nschedule: 0 9 * *\n---\nhi\n")
    proc = daemon_process(paths)
    await proc.wait_ready()

    listed = json.loads((await acli("jobs", "list", "--project", root, "--json")).stdout)
    rows = {r["name"]: r for r in listed}
    assert set(rows) == {"report", "broken", "heartbeat"}
    assert rows["report"]["schedule"] == "0 9 * * mon-fri"
    assert "T09:00:00+00:00" in rows["report"]["next_run"]
    assert rows["report"]["last_run"] == "" and rows["report"]["last_outcome"] == ""
    assert "five fields" in rows["broken"]["error"]
    human = await acli("jobs", "list", "--project", root)
    assert "report" in human.stdout and "error: broken.md" in human.stdout

    ran = await acli("jobs", "run", "report", "--project", root)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("FAKE-REPLY turn=1 last=[")
    assert ran.stdout.strip().endswith("write the report")
    missing = await acli("jobs", "run", "nope", "--project", root)
    assert missing.returncode == EXIT_FAILURE and "no job named 'nope'" in missing.stderr
    beat = await acli("heartbeat", "run", "--project", root)
    assert beat.returncode == 0 and "FAKE-REPLY turn=1" in beat.stdout

    rows = {
        r["name"]: r
        for r in json.loads((await acli("jobs", "list", "--project", root, "--json")).stdout)
    }
    assert rows["report"]["last_outcome"] == "ok" and rows["report"]["last_run"]
    status = await acli("status", "--project", root)
    # the sooner of the two: the heartbeat (an hour from now) or the report (09:00 on a
    # weekday, sooner between 08:00 and 09:00)
    soonest = min(
        ("heartbeat", "report"), key=lambda name: dt.datetime.fromisoformat(rows[name]["next_run"])
    )
    assert f"next scheduled: {soonest} at" in status.stdout

    (paths.jobs_dir / "broken.md").write_text("---\nschedule: 0 9 * * *\n---\nhi\n")
    assert (await acli("reload", "--project", root)).returncode == 0
    rows = {
        r["name"]: r
        for r in json.loads((await acli("jobs", "list", "--project", root, "--json")).stdout)
    }
    assert rows["broken"]["error"] == "" and rows["broken"]["next_run"]
    proc.signal(15)
    assert await proc.wait_exit() == 0


def test_ask_in_worktree_mode_runs_and_stays_in_the_thread_worktree(
    make_project: Callable[..., Any],
) -> None:
    paths = make_project(threads={"workspace": "worktree"})
    root = str(paths.root)
    ident = ["-c", "user.name=t", "-c", "user.email=t@e.invalid"]
    subprocess.run(["git", "-C", root, "init", "-q"], check=True)
    subprocess.run(
        ["git", "-C", root, *ident, "commit", "-q", "--allow-empty", "-m", "i"], check=True
    )
    first = cli("ask", "--project", root, "--thread", "123456789", "-q", "ECHO_CWD")
    assert first.returncode == 0, first.stderr
    worktree = paths.state_dir / "worktrees" / "123456789"
    assert first.stdout.strip() == str(worktree)
    shown = json.loads(cli("sessions", "show", "123456789", "--project", root).stdout)
    assert shown["record"]["workspace"]["path"] == str(worktree)
    assert shown["record"]["workspace"]["branch"] == "claudeclaw/123456789"
    again = cli("ask", "--project", root, "--thread", "123456789", "-q", "ECHO_CWD")
    assert again.stdout.strip() == str(worktree)
    assert cli("ask", "--project", root, "-q", "ECHO_CWD").stdout.strip() == root  # global
