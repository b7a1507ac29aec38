"""Warm duplex sessions (claude/live.py, claude/session_runner.py) against the fake claude."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest
import structlog
from structlog.testing import capture_logs

from claudeclaw.claude import live as live_module
from claudeclaw.claude.live import NO_APPROVER_MESSAGE, Allow, Deny
from claudeclaw.claude.session_runner import ClaudeSessionRunner
from claudeclaw.config import LimitSettings, Settings
from claudeclaw.logs import bind, unbind
from claudeclaw.model import RunDone, RunFailed, RunSession, RunStarted
from tests.fixtures_claude import (
    LiveRun,
    SettingsFactory,
    begin_turn,
    send_turn,
    with_approvals,
)
from tests.fixtures_daemon import wait_for

SAFETY = 30


@pytest.fixture
def settings(claude_settings: SettingsFactory, fake_claude_path: Path) -> Settings:
    return claude_settings(fake_claude_path, kill_grace_seconds=0.5)


send = functools.partial(send_turn, within=SAFETY)


@pytest.fixture
async def runner(workdir: Path, fake_claude_env: dict[str, str]) -> Any:
    runner = ClaudeSessionRunner(workdir, env=fake_claude_env)
    yield runner
    await runner.close()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_turns_reuse_one_process_and_report_their_own_cost(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    first, run1 = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone), first
    assert first.reply == "FAKE-REPLY turn=1 last=one"
    assert [e.session_id for e in run1.events if isinstance(e, RunSession)] == [first.session_id]
    second, run2 = await send(runner, settings, "two", first.session_id)
    assert isinstance(second, RunDone), second
    assert second.reply == "FAKE-REPLY turn=2 last=two"
    assert run1.pids == run2.pids and _alive(run1.pids[0])
    assert [e.resumed for e in run2.events if isinstance(e, RunStarted)] == [True]
    assert second.cost_usd == pytest.approx(0.000188)  # not the process's running total
    status = runner.status()
    assert status.mode == "warm" and status.claude_pid == run1.pids[0]
    assert status.rss_bytes > 0 and not status.running


async def test_warm_argv_and_env_follow_the_cold_rules(
    runner: ClaudeSessionRunner, claude_settings: SettingsFactory, fake_claude_path: Path
) -> None:
    settings = claude_settings(fake_claude_path, discord_token="tok-SECRET-123", model="m1")
    # the daemon's environment holds the token (as `claudeclaw run` by hand may): the warm
    # claude must get it under no name
    assert runner.env is not None
    runner.env = {**runner.env, "DISCORD_TOKEN": "tok-SECRET-123", "COPY": "tok-SECRET-123"}
    argv_reply, _ = await send(runner, settings, "ECHO_ARGV", None)
    assert isinstance(argv_reply, RunDone), argv_reply
    argv = json.loads(argv_reply.reply)
    assert argv[:6] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--input-format",
        "stream-json",
    ]
    assert "--replay-user-messages" in argv and "--dangerously-skip-permissions" in argv
    assert argv[argv.index("--model") + 1] == "m1" and "--" not in argv
    env_reply, _ = await send(runner, settings, "ECHO_ENV", argv_reply.session_id)
    assert isinstance(env_reply, RunDone)
    env = json.loads(env_reply.reply)
    assert "tok-SECRET-123" not in env.values() and "DISCORD_TOKEN" not in env


async def test_a_steer_reaches_the_running_turn(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    task, run = await begin_turn(
        runner,
        settings,
        'TOOL:Bash:{"command": "x"} SLEEP:2',
        None,
        until="progress",
        within=SAFETY,
    )  # the tool call is under way
    assert await runner.steer("also this")
    final, _ = await task
    assert isinstance(final, RunDone), final
    assert final.reply.endswith("steered=also this")
    assert final.reply.startswith("FAKE-REPLY turn=1 last=TOOL:Bash:")
    nxt, run2 = await send(runner, settings, "next", final.session_id)
    assert isinstance(nxt, RunDone) and nxt.reply == "FAKE-REPLY turn=3 last=next"
    assert run2.pids == run.pids


async def test_a_steer_too_late_for_the_turn_is_answered_in_the_same_reply(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    """No tool step left: the CLI queues the message as its next turn and starts it only on
    the next stdin line. The runner pokes it and the reply answers both; the turn after
    that is in step again."""
    task, _ = await begin_turn(runner, settings, "SLEEP:0.5 first", None, within=SAFETY)
    assert await runner.steer("late one")
    final, _ = await task
    assert isinstance(final, RunDone), final
    assert (
        final.reply == "FAKE-REPLY turn=1 last=SLEEP:0.5 first\n\nFAKE-REPLY turn=2 last=late one"
    )
    nxt, _ = await send(runner, settings, "third", final.session_id)
    assert isinstance(nxt, RunDone) and nxt.reply == "FAKE-REPLY turn=3 last=third"


async def test_steer_without_a_running_turn_does_nothing(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    assert not await runner.steer("nobody listens")
    await send(runner, settings, "one", None)
    assert not await runner.steer("still nobody")


async def test_interrupt_ends_the_turn_and_keeps_the_process(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    first, run1 = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone)
    task, run = await begin_turn(runner, settings, "SLEEP:60", first.session_id, within=SAFETY)
    assert await runner.interrupt()
    stopped, _ = await task
    assert isinstance(stopped, RunFailed) and stopped.reason == "cancelled", stopped
    assert stopped.message == "Stopped."
    after, run3 = await send(runner, settings, "after", first.session_id)
    assert isinstance(after, RunDone), after
    assert after.reply == "FAKE-REPLY turn=2 last=after"
    assert run1.pids == run.pids == run3.pids


async def test_an_ignored_interrupt_kills_the_group_and_the_next_turn_resumes(
    runner: ClaudeSessionRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "INTERRUPT_GRACE_SECONDS", 0.3)
    first, _ = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone)
    task, run = await begin_turn(runner, settings, "HANG", first.session_id, within=SAFETY)
    assert await runner.interrupt()
    stopped, _ = await task
    assert isinstance(stopped, RunFailed) and stopped.reason == "cancelled", stopped
    assert not _alive(run.pids[0])
    after, run2 = await send(runner, settings, "after", first.session_id)
    assert isinstance(after, RunDone), after
    assert after.reply == "FAKE-REPLY turn=2 last=after"
    assert run2.pids[0] != run.pids[0]


async def test_a_killed_warm_process_is_replaced_by_a_cold_resume_of_the_message(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    first, _ = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone)
    task, run = await begin_turn(runner, settings, "SLEEP:1 two", first.session_id, within=SAFETY)
    os.kill(run.pids[0], signal.SIGKILL)
    final, _ = await task
    assert isinstance(final, RunDone), final
    assert final.reply == "FAKE-REPLY turn=2 last=SLEEP:1 two"  # answered once, same session
    assert final.session_id == first.session_id
    started = [e for e in run.events if isinstance(e, RunStarted)]
    assert len(started) == 2 and started[1].resumed and started[1].pid != started[0].pid
    nxt, run3 = await send(runner, settings, "three", first.session_id)
    assert isinstance(nxt, RunDone) and nxt.reply == "FAKE-REPLY turn=3 last=three"
    assert runner.status().mode == "warm" and run3.pids[0] not in run.pids


async def test_a_crash_is_retried_once_cold(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    final, run = await send(runner, settings, "CRASH", None)
    assert isinstance(final, RunFailed) and final.reason == "error", final
    assert "simulated crash" in final.message
    assert len(run.pids) == 2  # the warm one, then one cold retry: no more


async def test_a_settings_change_replaces_the_process(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    first, run1 = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone)
    changed = dataclasses.replace(settings, model="claude-other")
    second, run2 = await send(runner, changed, "ECHO_ARGV", first.session_id)
    assert isinstance(second, RunDone), second
    argv = json.loads(second.reply)
    assert argv[argv.index("--model") + 1] == "claude-other"
    assert argv[argv.index("--resume") + 1] == first.session_id
    assert run2.pids != run1.pids and not _alive(run1.pids[0])


async def test_a_reset_session_gets_a_fresh_process(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    first, run1 = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone)
    again, run2 = await send(runner, settings, "fresh", None)
    assert isinstance(again, RunDone) and again.reply == "FAKE-REPLY turn=1 last=fresh"
    assert again.session_id != first.session_id and run2.pids != run1.pids


async def test_warm_sessions_off_runs_cold(runner: ClaudeSessionRunner, settings: Settings) -> None:
    cold = dataclasses.replace(
        settings, runner=dataclasses.replace(settings.runner, warm_sessions=False)
    )
    first, run1 = await send(runner, cold, "ECHO_ARGV", None)
    assert isinstance(first, RunDone)
    assert "--input-format" not in json.loads(first.reply)
    second, run2 = await send(runner, cold, "two", first.session_id)
    assert isinstance(second, RunDone) and second.reply == "FAKE-REPLY turn=2 last=two"
    assert run1.pids != run2.pids and runner.status().mode == ""


async def test_interrupt_stops_a_cold_run(runner: ClaudeSessionRunner, settings: Settings) -> None:
    cold = dataclasses.replace(
        settings, runner=dataclasses.replace(settings.runner, warm_sessions=False)
    )
    task, run = await begin_turn(runner, cold, "SLEEP:60", None, within=SAFETY)
    assert runner.status().mode == "cold" and runner.status().claude_pid == run.pids[0]
    assert await runner.interrupt()
    final, _ = await task
    assert isinstance(final, RunFailed) and final.reason == "cancelled"
    assert not _alive(run.pids[0])


async def test_an_idle_warm_process_is_closed(
    workdir: Path, fake_claude_env: dict[str, str], settings: Settings
) -> None:
    closed = asyncio.Event()
    runner = ClaudeSessionRunner(workdir, env=fake_claude_env, on_warm_changed=closed.set)
    quick = dataclasses.replace(settings, limits=LimitSettings(warm_idle_seconds=0.05))
    try:
        first, run = await send(runner, quick, "one", None)
        assert isinstance(first, RunDone)
        await asyncio.wait_for(closed.wait(), SAFETY)
        assert runner.status().mode == "" and not _alive(run.pids[0])
        second, _ = await send(runner, quick, "two", first.session_id)
        assert isinstance(second, RunDone) and second.reply == "FAKE-REPLY turn=2 last=two"
    finally:
        await runner.close()


async def test_a_turn_idle_timeout_interrupts_and_keeps_the_process(
    runner: ClaudeSessionRunner, claude_settings: SettingsFactory, fake_claude_path: Path
) -> None:
    settings = claude_settings(fake_claude_path, idle_timeout_seconds=0.3)
    final, run = await send(runner, settings, "SLEEP:30", None)
    assert isinstance(final, RunFailed) and final.reason == "timeout", final
    assert "no output for 0.3 s" in final.message
    after, run2 = await send(runner, settings, "after", final.session_id)
    assert isinstance(after, RunDone), after
    assert run2.pids == run.pids


async def test_close_ends_the_process_on_stdin_eof(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    first, run = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone)
    proc = psutil.Process(run.pids[0])
    await runner.close()
    assert not _alive(run.pids[0])
    with pytest.raises(psutil.NoSuchProcess):
        proc.status()


async def test_permission_requests_are_denied_without_an_approver(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    final, _ = await send(runner, settings, 'PERMIT:Write:{"file_path": "x"}', None)
    assert isinstance(final, RunDone), final
    assert final.reply == f"PERMISSION deny {NO_APPROVER_MESSAGE}"


async def test_permission_requests_reach_the_approver(
    workdir: Path, fake_claude_env: dict[str, str], settings: Settings
) -> None:
    asked: list[tuple[str, dict[str, Any], list[Any]]] = []

    async def approve(tool: str, tool_input: dict[str, Any], suggestions: list[Any]) -> Any:
        asked.append((tool, tool_input, suggestions))
        if tool == "Write":
            return Allow(updated_input={**tool_input, "checked": True})
        if tool == "Boom":
            raise RuntimeError("discord is down")
        return Deny("not that one")

    runner = ClaudeSessionRunner(workdir, env=fake_claude_env, can_use_tool=approve)
    settings = with_approvals(settings)
    try:
        argv_reply, _ = await send(runner, settings, "ECHO_ARGV", None)
        assert isinstance(argv_reply, RunDone)
        argv = json.loads(argv_reply.reply)
        assert "--dangerously-skip-permissions" not in argv
        assert argv[argv.index("--permission-prompt-tool") + 1] == "stdio"
        sid = argv_reply.session_id
        allowed, _ = await send(runner, settings, 'PERMIT:Write:{"file_path": "x"}', sid)
        assert isinstance(allowed, RunDone)
        assert allowed.reply == 'PERMISSION allow {"file_path": "x", "checked": true}'
        denied, _ = await send(runner, settings, "PERMIT:Bash:{}", sid)
        assert isinstance(denied, RunDone) and denied.reply == "PERMISSION deny not that one"
        failed, _ = await send(runner, settings, "PERMIT:Boom:{}", sid)
        assert isinstance(failed, RunDone)
        assert failed.reply.startswith("PERMISSION deny ") and "discord is down" in failed.reply
        assert asked[0] == (
            "Write",
            {"file_path": "x"},
            [{"type": "setMode", "mode": "acceptEdits"}],
        )
    finally:
        await runner.close()


async def test_an_unknown_control_request_gets_an_error_answer(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    final, _ = await send(runner, settings, "CONTROL:mystery_thing", None)
    assert isinstance(final, RunDone), final
    assert final.reply == "CONTROL-ANSWER error Unsupported control request subtype: mystery_thing"


async def test_a_slash_command_turn_ends_at_its_result(
    runner: ClaudeSessionRunner, claude_settings: SettingsFactory, fake_claude_path: Path
) -> None:
    """The CLI does not echo a slash command: its turn still ends at its result (not at a
    timeout waiting for a follow-up that never comes)."""
    settings = claude_settings(fake_claude_path, idle_timeout_seconds=20)
    final, _ = await asyncio.wait_for(send(runner, settings, "/compact", None), 5)
    assert isinstance(final, RunDone) and final.reply == "FAKE-REPLY turn=1 last=/compact"


async def test_a_steer_whose_echo_is_missed_ends_with_the_turn(
    runner: ClaudeSessionRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steer the turn took in without echoing it looks queued: the CLI is poked, starts
    no new turn, and after FOLLOWUP_SECONDS the turn ends with its own reply (then, not
    at the idle timeout, 20 s here)."""
    monkeypatch.setattr(live_module, "FOLLOWUP_SECONDS", 0.3)
    task, _ = await begin_turn(
        runner,
        settings,
        'TOOL:Bash:{"command": "x"} SLEEP:2',
        None,
        until="progress",
        within=SAFETY,
    )
    assert await runner.steer("NOECHO hidden")
    async with asyncio.timeout(10):  # SLEEP:2 + FOLLOWUP_SECONDS, far from the idle 20 s
        final, _ = await task
    assert isinstance(final, RunDone), final
    assert final.reply.endswith("steered=NOECHO hidden") and "\n\n" not in final.reply
    nxt, _ = await send(runner, settings, "next", final.session_id)
    assert isinstance(nxt, RunDone) and nxt.reply == "FAKE-REPLY turn=3 last=next"


async def _until_stopped(pid: int) -> None:
    """Await the runner's freeze (a safety-net poll of the process state, not a sleep)."""
    async with asyncio.timeout(SAFETY):
        while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
            await asyncio.sleep(0.02)


async def test_an_idle_warm_process_is_frozen_and_thawed_for_the_next_turn(
    runner: ClaudeSessionRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between turns the warm claude is SIGSTOPped (no CPU while idle); the next message
    continues it; closing a frozen one is quick (no wait for the kill grace)."""
    from claudeclaw.claude import session_runner

    monkeypatch.setattr(session_runner, "FREEZE_AFTER_SECONDS", 0.05)
    first, run1 = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone)
    await _until_stopped(run1.pids[0])
    assert runner.status().frozen and runner.status().mode == "warm"
    second, run2 = await send(runner, settings, "two", first.session_id)
    assert isinstance(second, RunDone) and second.reply == "FAKE-REPLY turn=2 last=two"
    assert run2.pids == run1.pids
    await _until_stopped(run1.pids[0])
    proc = psutil.Process(run1.pids[0])
    await asyncio.wait_for(runner.close(), 2)  # stdin EOF after SIGCONT: a clean exit
    assert not _alive(proc.pid)


async def test_a_warm_process_with_a_child_is_not_frozen(
    runner: ClaudeSessionRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background tool (a child of the CLI) must keep running: no freeze then."""
    from claudeclaw.claude import session_runner

    monkeypatch.setattr(session_runner, "FREEZE_AFTER_SECONDS", 0.0)
    first, run = await send(runner, settings, "BACKGROUND", None)
    assert isinstance(first, RunDone), first
    assert not await runner._freeze()
    assert psutil.Process(run.pids[0]).status() != psutil.STATUS_STOPPED
    assert not runner.status().frozen


async def test_a_silent_warm_process_is_replaced_by_a_cold_run(
    runner: ClaudeSessionRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm claude that does not start the turn at all (not even system/init) within
    ACK_SECONDS is hung: killed, and the message runs once, cold, in the same session."""
    monkeypatch.setattr(live_module, "ACK_SECONDS", 0.3)
    first, run1 = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone)
    final, run = await send(runner, settings, "SILENT two", first.session_id)
    assert isinstance(final, RunDone), final
    assert final.reply == "FAKE-REPLY turn=2 last=SILENT two"
    assert run.pids[0] == run1.pids[0] and len(run.pids) == 2 and not _alive(run1.pids[0])


async def test_a_gone_session_starts_afresh(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    """A warm start on a session the CLI no longer has fails; the cold run it falls back
    to starts a new session and says so (context_reset)."""
    gone = "00000000-0000-4000-8000-000000000000"
    final, _ = await send(runner, settings, "hello", gone)
    assert isinstance(final, RunDone), final
    assert final.context_reset and final.session_id != gone
    nxt, _ = await send(runner, settings, "again", final.session_id)
    assert isinstance(nxt, RunDone) and nxt.reply == "FAKE-REPLY turn=2 last=again"
    assert runner.status().mode == "warm"


async def test_a_failed_warm_start_runs_cold_for_a_while(
    runner: ClaudeSessionRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CLI that cannot start in duplex mode: the message runs cold, and so do the next
    ones for WARM_RETRY_SECONDS (no failed warm start before each)."""
    from claudeclaw.claude import session_runner

    starts: list[int] = []
    real_start = live_module.LiveClaude.start

    async def broken(*args: Any, **kwargs: Any) -> str:
        starts.append(1)
        return "the warm claude did not start: no duplex here"

    monkeypatch.setattr(live_module.LiveClaude, "start", broken)
    first, _ = await send(runner, settings, "one", None)
    second, _ = await send(runner, settings, "two", first.session_id)
    assert isinstance(second, RunDone) and second.reply == "FAKE-REPLY turn=2 last=two"
    assert starts == [1] and runner.status().mode == ""
    monkeypatch.setattr(live_module.LiveClaude, "start", real_start)
    monkeypatch.setattr(session_runner, "WARM_RETRY_SECONDS", 0.0)
    runner._cold_until = 0.0
    third, _ = await send(runner, settings, "three", first.session_id)
    assert isinstance(third, RunDone) and runner.status().mode == "warm"


async def test_a_missing_claude_fails_the_message_with_the_fix(
    runner: ClaudeSessionRunner, claude_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = claude_settings(tmp_path / "no-such-claude")
    final, _ = await send(runner, settings, "hello", None)
    assert isinstance(final, RunFailed) and final.reason == "spawn", final
    assert "runner.claudePath" in final.message
    assert runner.status().mode == "" and not await runner.interrupt()


async def test_garbage_lines_are_skipped_in_a_warm_turn(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    final, _ = await send(runner, settings, "GARBAGE x", None)
    assert isinstance(final, RunDone) and final.reply == "FAKE-REPLY turn=1 last=GARBAGE x"


async def test_a_turn_hard_timeout_interrupts_it(
    runner: ClaudeSessionRunner, claude_settings: SettingsFactory, fake_claude_path: Path
) -> None:
    settings = claude_settings(fake_claude_path, idle_timeout_seconds=0.2, hard_timeout_seconds=0.3)
    final, run = await send(runner, settings, 'TOOL:Bash:{"command": "x"} SLEEP:30', None)
    assert isinstance(final, RunFailed) and final.reason == "timeout", final
    assert runner.status().mode == "warm" and runner.status().claude_pid == run.pids[0]


async def test_an_interrupt_withdraws_a_pending_permission_question(
    workdir: Path, fake_claude_env: dict[str, str], settings: Settings
) -> None:
    """/stop while the approver waits on a human: the turn stops, the CLI withdraws its
    question (control_cancel_request) and the approver's wait is cancelled."""
    asked = asyncio.Event()
    cancelled = asyncio.Event()

    async def approve(tool: str, tool_input: dict[str, Any], suggestions: list[Any]) -> Any:
        asked.set()
        try:
            await asyncio.Event().wait()  # nobody answers
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Deny("unreachable")

    runner = ClaudeSessionRunner(workdir, env=fake_claude_env, can_use_tool=approve)
    settings = with_approvals(settings)
    try:
        task = asyncio.create_task(send(runner, settings, "PERMIT:Write:{}", None))
        await asyncio.wait_for(asked.wait(), SAFETY)
        assert await runner.interrupt()
        final, _ = await task
        assert isinstance(final, RunFailed) and final.reason == "cancelled", final
        await asyncio.wait_for(cancelled.wait(), SAFETY)
    finally:
        await runner.close()


async def test_the_child_check_reads_the_children_files_and_agrees_with_the_scan(
    runner: ClaudeSessionRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before a freeze the runner asks whether the idle CLI has a live child from
    ``/proc/<pid>/task/*/children`` (cheap, on the loop) instead of a scan of all of /proc;
    both answers agree: a live child yes, a zombie or none no; without those files (an
    older kernel) it falls back to the scan."""
    from claudeclaw.claude import session_runner as sr

    first, run = await send(runner, settings, "BACKGROUND", None)
    assert isinstance(first, RunDone), first
    pid = run.pids[0]
    assert sr._has_children_fast(pid) is True and sr._has_children(pid) is True
    # a process whose only child has exited and is never reaped (cat does not wait)
    parent = subprocess.Popen(["sh", "-c", "true & exec cat"], stdin=subprocess.PIPE)
    await asyncio.wait_for(_until_zombie_child(parent.pid), SAFETY)
    assert sr._has_children_fast(parent.pid) is False and sr._has_children(parent.pid) is False
    assert parent.stdin is not None
    parent.stdin.close()
    parent.wait()
    lone = await asyncio.create_subprocess_exec("cat", stdin=asyncio.subprocess.PIPE)
    assert sr._has_children_fast(lone.pid) is False and sr._has_children(lone.pid) is False
    assert lone.stdin is not None
    lone.stdin.close()
    await lone.wait()
    assert sr._has_children_fast(lone.pid) is True  # gone: unsure, so no freeze

    real_open = open

    def no_children_files(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith("/children"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(sr, "open", no_children_files, raising=False)
    assert sr._has_children_fast(pid) is None
    scans: list[int] = []
    monkeypatch.setattr(sr, "_has_children", lambda p: scans.append(p) or True)
    assert not await runner._freeze()  # the fallback answered "has a child"
    assert scans == [pid]


async def _until_zombie_child(pid: int) -> None:
    while [c.status() for c in psutil.Process(pid).children()] != [psutil.STATUS_ZOMBIE]:
        await asyncio.sleep(0.01)  # a safety-net poll of the process state


async def test_the_warm_key_is_built_once_per_settings_object(
    runner: ClaudeSessionRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The argv a warm process was started with is rebuilt only when the settings object
    (or the working directory) changes, not for every message: the same process answers."""
    from claudeclaw.claude import session_runner as sr

    built: list[Settings] = []
    real = sr.warm_key

    def counting(s: Settings, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        built.append(s)
        return real(s, *args, **kwargs)

    monkeypatch.setattr(sr, "warm_key", counting)
    first, run1 = await send(runner, settings, "one", None)
    second, run2 = await send(runner, settings, "two", first.session_id)  # type: ignore[union-attr]
    assert isinstance(second, RunDone) and run2.pids == run1.pids
    assert built == [settings]
    changed = dataclasses.replace(settings, model="claude-other")
    third, run3 = await send(runner, changed, "three", second.session_id)
    assert isinstance(third, RunDone) and run3.pids != run1.pids  # still replaced
    assert built == [settings, changed]


async def test_each_turn_logs_under_its_own_message(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    """The warm process outlives the message it was started for: a later turn's log lines
    name that turn's message, so an operator following one message finds them."""
    sent = LiveRun()
    with capture_logs() as logs:
        first = await runner.run(settings, "one", session_id=None, msg_id="m-first", on_event=sent)
        assert isinstance(first, RunDone), first
        second = await runner.run(
            settings, "two", session_id=first.session_id, msg_id="m-second", on_event=sent
        )
        assert isinstance(second, RunDone), second
    turns = [(e["msg_id"], e["turn"]) for e in logs if e["event"] == "claude.live_turn"]
    assert turns == [("m-first", 1), ("m-second", 2)]
    started = [e for e in logs if e["event"] == "claude.live_started"]
    assert [e["msg_id"] for e in started] == ["m-first"]


async def test_what_the_warm_process_logs_between_turns_names_no_message(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    """The worker binds each message's id to its log context; the warm process's reader was
    started in the first message's, and must not carry its id into lines about later
    output (here a garbage line written after turn 1's result)."""
    sent = LiveRun()
    garbage_logged = asyncio.Event()

    def note_garbage(_logger: Any, _method: str, event: Any) -> Any:
        if event["event"] == "claude.garbage_line":
            garbage_logged.set()
        return event

    processors = [structlog.contextvars.merge_contextvars, note_garbage]
    with capture_logs(processors=processors) as logs:
        bind(msg_id="m-first")  # as the worker does before each run
        first = await runner.run(
            settings, "LATE_GARBAGE", session_id=None, msg_id="m-first", on_event=sent
        )
        assert isinstance(first, RunDone), first
        # the line after the result, read between turns
        await asyncio.wait_for(garbage_logged.wait(), 10)
        bind(msg_id="m-second")
        second = await runner.run(
            settings, "two", session_id=first.session_id, msg_id="m-second", on_event=sent
        )
        assert isinstance(second, RunDone), second
        unbind("msg_id")
    garbage = [e for e in logs if e["event"] == "claude.garbage_line"]
    assert len(garbage) == 1 and "msg_id" not in garbage[0], garbage
    turns = [(e["msg_id"], e["turn"]) for e in logs if e["event"] == "claude.live_turn"]
    assert turns == [("m-first", 1), ("m-second", 2)]


async def test_a_claude_started_ahead_serves_a_new_session_and_not_a_resumed_one(
    tmp_path: Path, workdir: Path, fake_claude_env: dict[str, str], settings: Settings
) -> None:
    """``prestart`` (the spare's): a new session's first message, sent while that start is
    still under way, runs on the process started ahead (one process in all); a message
    that resumes a session closes the one started ahead and starts its own."""
    pids = tmp_path / "pids"
    runner = ClaudeSessionRunner(
        workdir, env={**fake_claude_env, "FAKE_CLAUDE_PIDFILE_DIR": str(pids)}
    )
    try:
        runner.prestart(settings)
        first, run1 = await send(runner, settings, "one", None)  # (waits for the start)
        assert isinstance(first, RunDone) and first.reply.endswith("last=one")
        assert [int(p.stem) for p in pids.glob("*.pid")] == run1.pids
        runner.prestart(settings)  # one is warm already: nothing new is started
        assert runner.warm_pid == run1.pids[0]
        await runner.close()
        runner.prestart(settings)
        await wait_for(lambda: runner.warm_pid, "the claude started ahead", SAFETY)
        ahead = runner.warm_pid
        again, run2 = await send(runner, settings, "two", first.session_id)
        assert isinstance(again, RunDone) and again.session_id == first.session_id
        assert run2.pids[0] != ahead and not _alive(ahead)
    finally:
        await runner.close()


async def test_closing_while_a_claude_starts_ahead_kills_it(
    tmp_path: Path, workdir: Path, fake_claude_env: dict[str, str], settings: Settings
) -> None:
    """A ``claude`` that never answers ``initialize``, started ahead; the worker closes
    (shutdown) meanwhile. Result: the start is cancelled and the process it spawned is
    killed, not left behind."""
    pidfile = tmp_path / "mute.pid"
    mute = tmp_path / "mute-claude"
    mute.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 60\n")
    mute.chmod(0o755)
    mute_settings = dataclasses.replace(
        settings, runner=dataclasses.replace(settings.runner, claude_path=str(mute))
    )
    runner = ClaudeSessionRunner(workdir, env=fake_claude_env)
    runner.prestart(mute_settings)
    await wait_for(lambda: pidfile.is_file() and pidfile.read_text(), "the mute claude", SAFETY)
    pid = int(pidfile.read_text())
    assert _alive(pid) and runner.warm_pid == 0
    await asyncio.wait_for(runner.close(), SAFETY)
    assert not _alive(pid)
