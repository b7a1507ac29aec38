"""run_claude with the real pinned CLI against the loopback fake Anthropic API.

Each run costs ~1 s of CPU, so this file keeps to six of them. The env is offline: temp
HOME/CLAUDE_CONFIG_DIR/TMPDIR, ``ANTHROPIC_BASE_URL`` = the fake, the "disable" variables,
``CLAUDE_CODE_MAX_RETRIES=0`` and ``IS_SANDBOX=1`` (CI runs as root).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from claudeclaw.claude import transcript_path
from claudeclaw.claude.argv import SCOPE_PREAMBLE
from claudeclaw.config import Settings
from claudeclaw.model import RunDone, RunEvent, RunFailed, RunSession, RunStarted
from tests.fake_anthropic import FakeAnthropic, user_text
from tests.fixtures_claude import SettingsFactory, run_once

pytestmark = pytest.mark.realcli

SAFETY = 60


@pytest.fixture
def settings(claude_settings: SettingsFactory, real_claude_path: Path) -> Settings:
    return claude_settings(real_claude_path, idle_timeout_seconds=30, hard_timeout_seconds=60)


async def run(
    settings: Settings, prompt: str, env: dict[str, str], cwd: Path, session_id: str | None = None
) -> tuple[RunDone | RunFailed, list[RunEvent]]:
    events: list[RunEvent] = []
    final = await run_once(settings, prompt, env, cwd, events.append, session_id=session_id)
    return final, events


async def test_new_session_is_recorded_and_the_next_turn_resumes_it(
    claude_settings: SettingsFactory,
    real_claude_path: Path,
    real_claude_env: dict[str, str],
    fake_anthropic: FakeAnthropic,
    workdir: Path,
) -> None:
    """1. A first run with every kind of flag we pass (locked tools, allow/deny lists, model).
    2. A second run with --resume. Result: the CLI accepted our argv, the session id from
    system/init is the one in RunDone, and the second request carried the first turn."""
    settings = claude_settings(
        real_claude_path,
        level="locked",
        allowed_tools=("Read",),
        disallowed_tools=("WebFetch",),
        model="claude-sonnet-4-5",
        append_system_prompt="EXTRA-SYSTEM-TEXT",
    )
    first, events = await run(settings, "first", real_claude_env, workdir)
    assert isinstance(first, RunDone), first
    assert first.reply == "FAKE-REPLY user_msgs=1 assistant_msgs=0 last=first"
    sessions = [e for e in events if isinstance(e, RunSession)]
    assert [s.session_id for s in sessions] == [first.session_id]
    assert uuid.UUID(first.session_id)
    assert transcript_path(workdir, first.session_id, real_claude_env).is_file()

    request = fake_anthropic.message_requests()[-1]
    assert request.body["model"] == "claude-sonnet-4-5"
    tools = {tool.get("name") for tool in request.body.get("tools", [])}
    assert tools and tools <= {"Read", "Grep", "Glob"}
    system = str(request.body.get("system"))
    assert SCOPE_PREAMBLE in system and str(workdir) in system and "EXTRA-SYSTEM-TEXT" in system

    second, events = await run(settings, "second", real_claude_env, workdir, first.session_id)
    assert isinstance(second, RunDone), second
    assert second.reply == "FAKE-REPLY user_msgs=2 assistant_msgs=1 last=second"
    assert second.session_id == first.session_id and not second.context_reset
    assert [e.resumed for e in events if isinstance(e, RunStarted)] == [True]


async def test_dead_session_id_recovers_with_a_new_session(
    settings: Settings,
    real_claude_env: dict[str, str],
    fake_anthropic: FakeAnthropic,
    workdir: Path,
) -> None:
    dead = "00000000-0000-4000-8000-000000000000"
    final, events = await run(settings, "again", real_claude_env, workdir, dead)
    assert isinstance(final, RunDone), final
    assert final.context_reset is True
    assert final.session_id != dead and uuid.UUID(final.session_id)
    assert final.reply == "FAKE-REPLY user_msgs=1 assistant_msgs=0 last=again"
    assert [e.resumed for e in events if isinstance(e, RunStarted)] == [True, False]
    assert len(fake_anthropic.message_requests()) == 1  # the dead resume never reached the API


async def test_api_error_is_reported_with_the_api_message(
    settings: Settings, real_claude_env: dict[str, str], workdir: Path
) -> None:
    final, _ = await run(settings, "ERROR:500", real_claude_env, workdir)
    assert isinstance(final, RunFailed), final
    assert final.reason == "error"
    assert "API Error: 500" in final.message and "fake error 500" in final.message


async def test_dash_prompt_reaches_the_api_as_text(
    settings: Settings,
    real_claude_env: dict[str, str],
    fake_anthropic: FakeAnthropic,
    workdir: Path,
) -> None:
    final, _ = await run(settings, "--version", real_claude_env, workdir)
    assert isinstance(final, RunDone), final
    assert final.reply == "FAKE-REPLY user_msgs=1 assistant_msgs=0 last=--version"
    messages = fake_anthropic.message_requests()[-1].messages
    last_user = next(m for m in reversed(messages) if m.get("role") == "user")
    assert user_text(last_user) == "--version"


async def test_a_cli_without_credentials_fails_with_the_fix(
    settings: Settings, real_claude_env: dict[str, str], workdir: Path
) -> None:
    """No API key and no login: the CLI says "Not logged in"; the user is told how to fix
    it (the daemon's user must log the CLI in)."""
    env = {k: v for k, v in real_claude_env.items() if k != "ANTHROPIC_API_KEY"}
    final, _ = await run(settings, "hello", env, workdir)
    assert isinstance(final, RunFailed) and final.reason == "error"
    assert "Not logged in" in final.message and "Fix:" in final.message
    assert "/login" in final.message


async def test_a_prompt_too_large_for_argv_reaches_the_api(
    settings: Settings,
    real_claude_env: dict[str, str],
    fake_anthropic: FakeAnthropic,
    workdir: Path,
) -> None:
    """A 200 KB prompt (over Linux's 128 KiB argv string limit) goes through stdin and the
    API receives all of it."""
    prompt = "big " + "x" * 200_000 + " tail-marker"
    final, _ = await run(settings, prompt, real_claude_env, workdir)
    assert isinstance(final, RunDone), final
    assert "tail-marker" in final.reply
    sent = [user_text(m) for r in fake_anthropic.message_requests() for m in r.messages]
    assert any(t.endswith("tail-marker") and len(t) > 200_000 for t in sent)
