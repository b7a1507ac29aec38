"""Fixtures for anything that runs ``claude``: the fake CLI, the fake API, the real CLI.

* ``fake_claude_path``: an executable that runs ``tests/fake_claude.py`` with this
  interpreter (a ``#!/bin/sh`` wrapper that ``exec``s, so the pid is the fake's own).
* ``fake_claude_env``: a base environment for it (temp HOME and state dir).
* ``claude_settings``: ``Settings`` factory pointing at a claude path with short timeouts.
* ``fake_anthropic``: the loopback fake Anthropic API, served from a thread.
* ``real_claude_path`` / ``real_claude_env``: the pinned real CLI and an offline env that
  talks to ``fake_anthropic`` (skips, or fails on CI, when the CLI is missing).
* ``LiveRun``, ``send_turn``, ``begin_turn``: one message through a warm
  ``ClaudeSessionRunner`` (the fake's and the real CLI's tests alike).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shlex
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from claudeclaw.claude.session_runner import ClaudeSessionRunner
from claudeclaw.config import RunnerSettings, SecuritySettings, Settings
from claudeclaw.model import RunDone, RunEvent, RunFailed, RunProgress, RunStarted
from tests.fake_anthropic import FakeAnthropic

FAKE_CLAUDE = Path(__file__).with_name("fake_claude.py")
CLI_SAMPLES = Path(__file__).parent / "data" / "cli-samples"
DEFAULT_REAL_CLAUDE = (
    Path.home() / ".cache" / "claudeclaw-ci" / "claude-2.1.330" / "node_modules" / ".bin" / "claude"
)

# The variables that keep the real CLI offline and quick (see docs/CLAUDE_RUNNER.md).
OFFLINE_ENV = {
    "ANTHROPIC_API_KEY": "dummy",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_MAX_RETRIES": "0",
    "IS_SANDBOX": "1",  # CI runs as root; the CLI refuses --dangerously-skip-permissions otherwise
}


def write_fake_claude_wrapper(directory: Path) -> Path:
    """An executable ``claude`` in ``directory`` that execs the fake with this Python.

    ``-S`` skips site-packages set-up (the fake is stdlib-only): ~20 ms → ~10 ms a spawn.
    """
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "claude"
    wrapper.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shlex.quote(str(FAKE_CLAUDE))} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


@pytest.fixture(scope="session")
def fake_claude_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An executable path to the fake ``claude``."""
    return write_fake_claude_wrapper(tmp_path_factory.mktemp("fake-claude-bin"))


@pytest.fixture
def fake_claude_env(tmp_path: Path) -> dict[str, str]:
    """A minimal base env for runs of the fake: own HOME and ``FAKE_CLAUDE_STATE``."""
    home = tmp_path / "home"
    state = tmp_path / "fake-claude-state"
    home.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "FAKE_CLAUDE_STATE": str(state),
        "LANG": "C.UTF-8",
    }


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def claude_settings() -> SettingsFactory:
    """``claude_settings(claude_path, level=..., model=..., **runner_fields)`` → Settings.

    Timeouts default short (idle 20 s, hard 60 s, grace 1 s) so a broken test fails fast.
    """

    def make(
        claude_path: Path | str,
        *,
        level: str = "moderate",
        allowed_tools: tuple[str, ...] = (),
        disallowed_tools: tuple[str, ...] = (),
        model: str = "",
        api: str = "",
        discord_token: str = "",
        **runner: Any,
    ) -> Settings:
        fields: dict[str, Any] = {
            "claude_path": str(claude_path),
            "idle_timeout_seconds": 20.0,
            "hard_timeout_seconds": 60.0,
            "kill_grace_seconds": 1.0,
        }
        fields.update(runner)
        settings = Settings(
            model=model,
            api=api,
            security=SecuritySettings(
                level=level,  # type: ignore[arg-type]
                allowed_tools=allowed_tools,
                disallowed_tools=disallowed_tools,
            ),
            runner=RunnerSettings(**fields),
        )
        if discord_token:
            settings = dataclasses.replace(
                settings, discord=dataclasses.replace(settings.discord, token=discord_token)
            )
        return settings

    return make


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """The loopback fake Anthropic API (a thread; ``.url``, ``.requests``)."""
    with FakeAnthropic() as api:
        yield api


@pytest.fixture(scope="session")
def real_claude_path() -> Path:
    """The pinned real CLI: ``$CLAUDECLAW_REAL_CLAUDE`` or the CI cache path.

    Missing: a failure when ``CI`` or ``CLAUDECLAW_REQUIRE_REAL_CLI`` is set, else a skip.
    """
    path = Path(os.environ.get("CLAUDECLAW_REAL_CLAUDE") or DEFAULT_REAL_CLAUDE)
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = (
        f"real claude CLI not found at {path}: ./tests/run.sh installs it, or set "
        "CLAUDECLAW_REAL_CLAUDE"
    )
    if os.environ.get("CI") or os.environ.get("CLAUDECLAW_REQUIRE_REAL_CLI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def real_claude_env(tmp_path: Path, fake_anthropic: FakeAnthropic) -> dict[str, str]:
    """An offline env for the real CLI: temp HOME/CLAUDE_CONFIG_DIR/TMPDIR, the fake API."""
    home = tmp_path / "claude-home"
    tmp = tmp_path / "claude-tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": fake_anthropic.url,
    }
    env.update(OFFLINE_ENV)
    return env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory for claude to work in (its cwd)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


async def run_once(
    settings: Settings,
    prompt: str,
    env: dict[str, str],
    cwd: Path,
    on_event: Callable[[Any], None],
    *,
    session_id: str | None = None,
    msg_id: str = "m",
    within: float = 60,
) -> Any:
    """One ``run_claude`` with a safety timeout; returns its final event."""
    from claudeclaw.claude.runner import run_claude

    return await asyncio.wait_for(
        run_claude(
            settings,
            prompt,
            session_id=session_id,
            msg_id=msg_id,
            cwd=cwd,
            on_event=on_event,
            env=env,
        ),
        within,
    )


class LiveRun:
    """One message through a runner: its events, and an event set when it started, when it
    made progress, and when that progress was a tool call."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self.started = asyncio.Event()
        self.progress = asyncio.Event()
        self.tool = asyncio.Event()

    def __call__(self, event: RunEvent) -> None:
        self.events.append(event)
        if isinstance(event, RunStarted):
            self.started.set()
        elif isinstance(event, RunProgress):
            self.progress.set()
            if event.tool:
                self.tool.set()

    @property
    def pids(self) -> list[int]:
        return [e.pid for e in self.events if isinstance(e, RunStarted)]


async def send_turn(
    runner: ClaudeSessionRunner,
    settings: Settings,
    prompt: str,
    session_id: str | None,
    run: LiveRun | None = None,
    *,
    within: float = 30,
) -> tuple[RunDone | RunFailed, LiveRun]:
    """Send ``prompt`` through ``runner`` (a safety timeout); its final event and its run."""
    run = run or LiveRun()
    final = await asyncio.wait_for(
        runner.run(settings, prompt, session_id=session_id, msg_id="m", on_event=run), within
    )
    return final, run


async def begin_turn(
    runner: ClaudeSessionRunner,
    settings: Settings,
    prompt: str,
    session_id: str | None,
    *,
    until: str = "started",
    within: float = 30,
) -> tuple[asyncio.Task[tuple[RunDone | RunFailed, LiveRun]], LiveRun]:
    """Send ``prompt`` in the background; return once its run has ``until`` (``started``,
    ``progress`` or ``tool``), with the task that ends with :func:`send_turn`'s answer."""
    run = LiveRun()
    task = asyncio.create_task(send_turn(runner, settings, prompt, session_id, run, within=within))
    await asyncio.wait_for(getattr(run, until).wait(), within)
    return task, run


def with_approvals(settings: Settings) -> Settings:
    """``settings`` with ``security.approvals`` on: the CLI asks us (``can_use_tool``)."""
    return dataclasses.replace(
        settings, security=dataclasses.replace(settings.security, approvals=True)
    )
