"""Warm duplex sessions with the real pinned CLI against the loopback fake Anthropic API.

A CLI start costs ~1 s of CPU; each test here starts one or two. The env is the same
offline one as ``test_claude_realcli.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from claudeclaw.claude.live import Deny
from claudeclaw.claude.session_runner import ClaudeSessionRunner
from claudeclaw.config import Settings
from claudeclaw.model import RunDone, RunFailed, RunStarted
from tests.fake_anthropic import FakeAnthropic, count_turns
from tests.fixtures_claude import SettingsFactory, begin_turn, send_turn, with_approvals

pytestmark = pytest.mark.realcli

SAFETY = 90


@pytest.fixture
def settings(claude_settings: SettingsFactory, real_claude_path: Path) -> Settings:
    return claude_settings(real_claude_path, idle_timeout_seconds=60, hard_timeout_seconds=90)


@pytest.fixture
async def runner(workdir: Path, real_claude_env: dict[str, str]) -> AsyncIterator[Any]:
    runner = ClaudeSessionRunner(workdir, env=real_claude_env)
    yield runner
    await runner.close()


send = functools.partial(send_turn, within=SAFETY)


async def test_warm_turns_carry_the_whole_history_from_one_process(
    runner: ClaudeSessionRunner, settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    """Turn N reaches the API with N user messages, and all three come from one process."""
    session: str | None = None
    pids: list[int] = []
    for n, text in enumerate(("one", "two", "three"), start=1):
        final, run = await send(runner, settings, text, session)
        assert isinstance(final, RunDone), final
        assert final.reply == f"FAKE-REPLY user_msgs={n} assistant_msgs={n - 1} last={text}"
        session = final.session_id
        pids += run.pids
    assert len(set(pids)) == 1
    assert count_turns(fake_anthropic.message_requests()[-1].messages) == (3, 2)


async def test_text_beyond_ascii_reaches_the_model_whole_and_half_a_pair_as_fffd(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    """Lines to a warm CLI are ASCII JSON (``\\u`` escapes): the real CLI reads them back
    to the same characters; half a surrogate pair arrives as U+FFFD."""
    text = "héllo wörld, naïve 😀 日本"
    final, _ = await send(runner, settings, text, None)
    assert isinstance(final, RunDone), final
    assert final.reply.endswith(f"last={text}")
    final, _ = await send(runner, settings, "half \ud83d here", final.session_id)
    assert isinstance(final, RunDone), final
    assert final.reply.endswith("last=half \ufffd here")


async def test_a_steer_reaches_the_model_inside_the_running_turn(
    runner: ClaudeSessionRunner, settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    task, run = await begin_turn(
        runner, settings, 'TOOL:Bash:{"command": "sleep 2"}', None, until="tool", within=SAFETY
    )  # the tool runs: the model waits on it
    assert await runner.steer("STEER-MARKER please also say hi")
    final, _ = await task
    assert isinstance(final, RunDone), final
    assert final.reply.startswith("TOOL-RESULT is_error=False")
    after_tool = fake_anthropic.message_requests()[-1]
    assert "STEER-MARKER" in str(after_tool.body.get("messages"))
    assert len(run.pids) == 1


async def test_interrupt_ends_the_turn_and_the_next_turn_runs_in_the_same_process(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    first, run1 = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone), first
    task, run = await begin_turn(runner, settings, "SLOW:30 long", first.session_id, within=SAFETY)
    assert await runner.interrupt()
    stopped, _ = await task
    assert isinstance(stopped, RunFailed) and stopped.reason == "cancelled", stopped
    after, run3 = await send(runner, settings, "after", first.session_id)
    assert isinstance(after, RunDone), after
    assert after.reply.endswith("last=after") and after.session_id == first.session_id
    assert run1.pids == run.pids == run3.pids


async def test_a_sigkilled_warm_process_is_answered_once_by_a_cold_resume(
    runner: ClaudeSessionRunner, settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    first, _ = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone), first
    task, run = await begin_turn(runner, settings, "SLOW:3 two", first.session_id, within=SAFETY)
    os.kill(run.pids[0], signal.SIGKILL)
    final, _ = await task
    assert isinstance(final, RunDone), final
    assert final.session_id == first.session_id and final.reply.endswith("last=SLOW:3 two")
    started = [e for e in run.events if isinstance(e, RunStarted)]
    assert len(started) == 2 and started[1].resumed
    assert len([e for e in run.events if isinstance(e, RunDone | RunFailed)]) == 0
    users, _ = count_turns(fake_anthropic.message_requests()[-1].messages)
    assert users >= 2  # the cold run resumed the session: "one" is in its history


async def test_a_model_change_replaces_the_warm_process(
    runner: ClaudeSessionRunner, settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    first, run1 = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone), first
    changed = dataclasses.replace(settings, model="claude-sonnet-4-5")
    second, run2 = await send(runner, changed, "two", first.session_id)
    assert isinstance(second, RunDone), second
    assert second.reply == "FAKE-REPLY user_msgs=2 assistant_msgs=1 last=two"
    assert run1.pids != run2.pids
    assert fake_anthropic.message_requests()[-1].body["model"] == "claude-sonnet-4-5"


async def test_a_permission_prompt_reaches_the_approver_and_its_denial_the_model(
    workdir: Path, real_claude_env: dict[str, str], settings: Settings
) -> None:
    asked: list[str] = []

    async def approve(tool: str, tool_input: dict[str, Any], suggestions: list[Any]) -> Deny:
        asked.append(tool)
        return Deny("DENIED-BY-HOST")

    runner = ClaudeSessionRunner(workdir, env=real_claude_env, can_use_tool=approve)
    settings = with_approvals(settings)
    try:
        path = workdir / "x.txt"
        prompt = f'TOOL:Write:{{"file_path": "{path}", "content": "hi"}}'
        final, _ = await send(runner, settings, prompt, None)
        assert isinstance(final, RunDone), final
        assert final.reply == "TOOL-RESULT is_error=True: DENIED-BY-HOST"
        assert asked == ["Write"] and not path.exists()
    finally:
        await runner.close()


async def test_a_slash_command_turn_ends_at_its_result(
    runner: ClaudeSessionRunner, settings: Settings
) -> None:
    """The CLI does not echo a slash command (--replay-user-messages): its warm turn still
    ends at its result, and the process takes the next turn."""
    first, run1 = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone), first
    compact, run2 = await asyncio.wait_for(send(runner, settings, "/compact", first.session_id), 30)
    assert isinstance(compact, RunDone), compact
    assert compact.session_id == first.session_id  # (a compaction's reply is empty)
    after, run3 = await send(runner, settings, "after", first.session_id)
    assert isinstance(after, RunDone) and after.reply.endswith("last=after")
    assert run1.pids == run2.pids == run3.pids


async def test_a_frozen_idle_cli_answers_the_next_turn(
    runner: ClaudeSessionRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real CLI SIGSTOPped between turns (its idle polling costs CPU) takes the next
    turn after SIGCONT, with the whole history."""
    import psutil

    from claudeclaw.claude import session_runner

    monkeypatch.setattr(session_runner, "FREEZE_AFTER_SECONDS", 0.05)
    first, run1 = await send(runner, settings, "one", None)
    assert isinstance(first, RunDone), first
    async with asyncio.timeout(SAFETY):  # a safety-net poll for the freeze, not a sleep
        while psutil.Process(run1.pids[0]).status() != psutil.STATUS_STOPPED:
            await asyncio.sleep(0.02)
    second, run2 = await send(runner, settings, "two", first.session_id)
    assert isinstance(second, RunDone), second
    assert second.reply == "FAKE-REPLY user_msgs=2 assistant_msgs=1 last=two"
    assert run2.pids == run1.pids


async def test_a_claude_started_ahead_and_frozen_answers_a_new_sessions_first_message(
    workdir: Path,
    real_claude_env: dict[str, str],
    settings: Settings,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``runner.prestartClaude``: the real CLI started ahead of any message (the spare's)
    and SIGSTOPped while it waits takes a new session's first message after SIGCONT: that
    very process answers it, and the API sees one user message, not a leftover turn."""
    import psutil

    from claudeclaw.claude import session_runner

    monkeypatch.setattr(session_runner, "FREEZE_AFTER_SECONDS", 0.05)
    changed = asyncio.Event()
    runner = ClaudeSessionRunner(workdir, env=real_claude_env, on_warm_changed=changed.set)
    try:
        runner.prestart(settings)
        await asyncio.wait_for(changed.wait(), SAFETY)
        ahead = runner.warm_pid
        assert ahead
        async with asyncio.timeout(SAFETY):  # a safety-net poll for the freeze, not a sleep
            while psutil.Process(ahead).status() != psutil.STATUS_STOPPED:
                await asyncio.sleep(0.02)
        final, run = await send(runner, settings, "first", None)
        assert isinstance(final, RunDone), final
        assert final.reply == "FAKE-REPLY user_msgs=1 assistant_msgs=0 last=first"
        assert run.pids == [ahead] and final.session_id
        assert count_turns(fake_anthropic.message_requests()[-1].messages) == (1, 0)
    finally:
        await runner.close()
    assert not psutil.pid_exists(ahead) or psutil.Process(ahead).status() == psutil.STATUS_ZOMBIE
