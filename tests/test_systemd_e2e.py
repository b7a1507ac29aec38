"""The .deb under a real systemd 252 (PID 1 in a throw-away container, tests/systemd/sdct.sh).

One container per session (fixtures_systemd.systemd_container); the tests run in file
order and share the installed service, each leaving it running (or resetting it).
Root and cgroup2 are required: without them these tests skip, under ``$CI`` they fail.
The daemon is the real ``claudeclaw run``; ``claude`` is tests/fake_claude.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures_systemd import (  # noqa: F401 - fixtures
    PROJECT,
    UNIT,
    Container,
    claudeclaw_deb,
    systemd_container,
)

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(300)]

THREAD = "123456789012345678"
OTHER_THREAD = "223456789012345678"


@pytest.fixture
def ct(systemd_container: Container) -> Iterator[Container]:  # noqa: F811
    systemd_container.run("systemctl", "reset-failed", UNIT, check=False)
    yield systemd_container


def active(ct: Container) -> bool:
    state = ct.show("ActiveState", "SubState")
    return state == {"ActiveState": "active", "SubState": "running"}


def ensure_running(ct: Container) -> None:
    if not active(ct):
        ct.run("systemctl", "start", UNIT)
    assert active(ct)


def status_json(ct: Container) -> dict[str, Any]:
    out = ct.cli("status", "--json").stdout
    data: dict[str, Any] = json.loads(out)
    return data


def test_installed_units_verify_cleanly(ct: Container) -> None:
    for unit in (
        "/lib/systemd/system/claudeclaw.service",
        "/lib/systemd/system/claudeclaw@.service",
    ):
        target = unit if "@." not in unit else unit.replace("@.", "@demo.")
        if target != unit:
            ct.run("cp", unit, f"/tmp/{target.rsplit('/', 1)[1]}")
            target = f"/tmp/{target.rsplit('/', 1)[1]}"
        proc = ct.run("systemd-analyze", "verify", target)
        assert proc.stderr == "", proc.stderr
    security = ct.run("systemd-analyze", "security", UNIT, "--no-pager").stdout
    line = next(x for x in security.splitlines() if "Overall exposure level" in x)
    score = float(line.split(":")[1].split()[0])
    assert score <= 2.5, line


def test_start_is_active_only_after_ready(ct: Container) -> None:
    ct.run("systemctl", "stop", UNIT, check=False)
    start = time.monotonic()
    ct.run("systemctl", "start", UNIT)  # Type=notify: blocks until READY=1
    took = time.monotonic() - start
    state = ct.show(
        "ActiveState", "SubState", "StatusText", "Type", "NotifyAccess", "MainPID",
        "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic",
    )  # fmt: skip
    assert state["Type"] == "notify" and state["NotifyAccess"] == "main"
    assert (state["ActiveState"], state["SubState"]) == ("active", "running")
    # STATUS= arrives with READY=1, so a non-empty StatusText right after `start` returned
    # shows that systemd waited for the notification (Type=simple would return at once).
    assert state["StatusText"], state
    # The unit became active when READY=1 came, i.e. after Python had started and set up
    # (Type=simple would be active within microseconds of the exec).
    waited_us = int(state["ActiveEnterTimestampMonotonic"]) - int(
        state["ExecMainStartTimestampMonotonic"]
    )
    assert waited_us > 50_000, state
    # ... and the daemon is serving: its control socket answers at once.
    report = status_json(ct)
    assert report
    assert took < 30
    print(f"systemctl start took {took:.2f}s")


def test_systemctl_status_shows_the_status_line(ct: Container) -> None:
    ensure_running(ct)
    text = ct.run("systemctl", "status", UNIT, "--no-pager", check=False).stdout
    status = ct.show("StatusText")["StatusText"]
    assert f'Status: "{status}"' in text
    for word in ("active", "running", "queued"):
        assert word in status, status


def test_journal_has_our_fields(ct: Container) -> None:
    ensure_running(ct)
    reply = ct.cli("send", "--thread", THREAD, "hello from the e2e test")
    assert "FAKE-REPLY" in reply.stdout, reply
    entries = ct.journal(f"THREAD_ID={THREAD}")
    assert entries, "no journal entry carries THREAD_ID"
    ours = [e for e in entries if e.get("_SYSTEMD_UNIT") == UNIT]
    assert ours, entries[:3]
    assert all(e["SYSLOG_IDENTIFIER"] == "claudeclaw" for e in ours)
    assert all(e["_TRANSPORT"] == "journal" for e in ours)
    workers = [e for e in ours if e.get("PROCESS") == "worker"]
    assert workers, "worker entries should be attributed to the unit with PROCESS=worker"
    assert any("WORKER_PID" in e and "EVENT" in e for e in workers)
    infos = [e for e in ours if e["PRIORITY"] == "6"]
    assert infos and all("MESSAGE" in e and "EVENT" in e for e in infos)
    # an error-level event: a run whose claude cannot be started
    # (the reply to the CLI is an error; the daemon logs claude.spawn_failed at error)
    errors_before = len(ct.journal("PRIORITY=3"))
    ct.settings(lambda d: d["runner"].__setitem__("claudePath", "/nonexistent/claude"))
    ct.run("systemctl", "reload", UNIT)
    ct.cli("send", "--thread", OTHER_THREAD, "this run cannot start", check=False)
    ct.settings(lambda d: d["runner"].__setitem__("claudePath", "/opt/claudeclaw-test/fake-claude"))
    ct.run("systemctl", "reload", UNIT)
    errors = [e for e in ct.journal("PRIORITY=3") if e.get("_SYSTEMD_UNIT") == UNIT]
    assert len(errors) > errors_before, "no PRIORITY=3 entry for the failed run"
    assert any(e.get("THREAD_ID") == OTHER_THREAD for e in errors), errors[-3:]


def test_reload_applies_settings_before_returning(ct: Container) -> None:
    ensure_running(ct)
    pid = ct.show("MainPID")["MainPID"]
    before = status_json(ct)
    old = _max_concurrent(before)
    new = old + 1
    ct.settings(lambda d: d["limits"].__setitem__("maxConcurrentRuns", new))
    ct.run("systemctl", "reload", UNIT)
    # no polling: `systemctl reload` returned, so the change is already in effect
    assert _max_concurrent(status_json(ct)) == new
    assert ct.show("MainPID")["MainPID"] == pid, "a reload must not restart the daemon"
    assert active(ct)
    reload_events = [
        e for e in ct.journal("SYSLOG_IDENTIFIER=claudeclaw") if "reload" in e.get("EVENT", "")
    ]
    assert reload_events, "no reload event in the journal"


def _max_concurrent(report: dict[str, Any]) -> int:
    """maxConcurrentRuns as `claudeclaw status --json` reports it."""
    for path in (("daemon", "limits", "max_concurrent_runs"), ("limits", "maxConcurrentRuns")):
        node: Any = report
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, int):
            return node
    raise AssertionError(f"maxConcurrentRuns not found in status --json: {report}")


def test_watchdog_kills_a_stuck_loop_and_systemd_restarts_it(ct: Container) -> None:
    dropin = f"/etc/systemd/system/{UNIT}.d/20-watchdog.conf"
    ct.write(dropin, "[Service]\nWatchdogSec=3s\n")
    try:
        ct.run("systemctl", "daemon-reload")
        ct.run("systemctl", "restart", UNIT)
        before = ct.show("MainPID", "NRestarts", "WatchdogUSec")
        assert before["WatchdogUSec"] == "3s"
        start = time.monotonic()
        ct.cli("debug", "hang")
        ct.wait_for(
            lambda: int(ct.show("NRestarts")["NRestarts"]) > int(before["NRestarts"]),
            "the watchdog restart",
            timeout=15,
        )
        ct.wait_for(lambda: active(ct), "the restarted daemon to be ready", timeout=15)
        took = time.monotonic() - start
        assert ct.show("MainPID")["MainPID"] != before["MainPID"]
        messages = [e.get("MESSAGE", "") for e in ct.journal("_PID=1")]
        assert any("Watchdog timeout" in m for m in messages), messages[-10:]
        assert any("Failed with result 'watchdog'" in m for m in messages), messages[-10:]
        print(f"watchdog kill + restart took {took:.2f}s")
    finally:
        ct.run("rm", "-f", dropin)
        ct.run("systemctl", "daemon-reload")
        ct.run("systemctl", "restart", UNIT)


def test_stop_leaves_no_worker_and_no_claude(ct: Container) -> None:
    ensure_running(ct)
    main_pid = int(ct.show("MainPID")["MainPID"])
    # a long run in a thread: a worker and a `claude` process are alive when we stop
    sender = threading.Thread(
        target=lambda: ct.cli(
            "send", "--thread", THREAD, "SLEEP:60 long run", check=False, timeout=120
        ),
        daemon=True,
    )
    sender.start()

    def claude_running() -> bool:
        return any("fake-claude" in cmd for cmd in ct.unit_pids().values())

    ct.wait_for(claude_running, "the fake claude to start")
    procs = ct.unit_pids()
    pids = sorted(procs)
    assert main_pid in procs, procs
    # besides the daemon and claude: the worker (and whatever spawns workers)
    others = [pid for pid, cmd in procs.items() if pid != main_pid and "fake-claude" not in cmd]
    assert others, "\n".join(f"{pid}: {cmd}" for pid, cmd in procs.items())
    start = time.monotonic()
    ct.run("systemctl", "stop", UNIT)
    took = time.monotonic() - start
    state = ct.show("ActiveState", "Result")
    assert state == {"ActiveState": "inactive", "Result": "success"}, state
    assert ct.alive(pids) == [], f"still alive after stop: {ct.alive(pids)} of {procs}"
    assert not any("fake-claude" in line for line in ct.sh("ps -eo args").stdout.splitlines())
    # KillMode=mixed: SIGTERM to the daemon only; it stopped its own workers in time
    # (limits.shutdownGraceSeconds=3 in the test settings), well before TimeoutStopSec.
    assert took < 20, took
    sender.join(timeout=30)
    print(f"systemctl stop took {took:.2f}s with a run in progress")


def test_sessions_survive_a_restart(ct: Container) -> None:
    ensure_running(ct)
    ct.cli("send", "--thread", OTHER_THREAD, "remember me")
    before = _sessions(ct)
    assert {THREAD, OTHER_THREAD} <= set(before), before
    ct.run("systemctl", "restart", UNIT)
    assert active(ct)
    assert _sessions(ct) == before
    # and the session is resumed, not recreated: the fake claude counts the turns
    reply = ct.cli("send", "--thread", OTHER_THREAD, "second turn").stdout
    assert "turn=2" in reply or "turn=3" in reply, reply


def _sessions(ct: Container) -> dict[str, tuple[str, str]]:
    """`claudeclaw sessions list`: key -> (session id, turns); the STATE column is live data."""
    rows = ct.cli("sessions", "list").stdout.splitlines()
    assert rows and rows[0].split()[:3] == ["KEY", "SESSION", "TURNS"], rows
    return {r.split()[0]: (r.split()[1], r.split()[2]) for r in rows[1:] if r.strip()}


def test_journal_priorities_from_the_daemon(ct: Container) -> None:
    entries = [e for e in ct.journal("SYSLOG_IDENTIFIER=claudeclaw") if e.get("EVENT")]
    by_priority: dict[str, set[str]] = {}
    for entry in entries:
        by_priority.setdefault(entry["PRIORITY"], set()).add(entry["EVENT"])
    assert "6" in by_priority and "3" in by_priority, by_priority
    assert all("\n" not in e["EVENT"] for e in entries)
    assert {e.get("PROCESS") for e in entries} >= {"supervisor", "worker"}
