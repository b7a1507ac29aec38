"""Fixtures that run the real supervisor and real worker processes with the fake ``claude``.

* ``make_project``: a project directory with a settings.json (overrides merged in).
* ``daemon``: a started in-process :class:`Supervisor` for that project (stopped after).
* ``collect``: submit a message and gather its events up to the final one; ``final``,
  ``started``, ``wait_for`` to look at them.
* ``without_spare``: the pool keeps no pre-forked spare (a new key's worker is forked).
* ``new_supervisor`` / ``started_supervisor``: the daemon for a project as tests run it
  (``discord=True``: against the fake Discord); ``discord_settings`` for its settings.
* ``start_supervisor``: ``await start_supervisor(paths)``, shut down after the test.
* ``daemon_process``: ``claudeclaw run`` as a real subprocess (for signal tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from claudeclaw import control
from claudeclaw.config import load_settings
from claudeclaw.model import RunDone, RunEvent, RunFailed, RunStarted, SessionKey, is_final
from claudeclaw.paths import ProjectPaths
from claudeclaw.pool import WorkerPool
from claudeclaw.supervisor import Supervisor
from tests.fake_discord import FakeDiscord


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture
def short_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short runtime directory (Unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cc-"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


ProjectFactory = Callable[..., ProjectPaths]


@pytest.fixture
def make_project(
    tmp_path: Path,
    fake_claude_path: Path,
    fake_claude_env: dict[str, str],
    short_runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> ProjectFactory:
    """Create a project whose settings point at the fake claude; returns its paths."""
    monkeypatch.setenv("FAKE_CLAUDE_STATE", fake_claude_env["FAKE_CLAUDE_STATE"])
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)

    def make(**overrides: Any) -> ProjectPaths:
        paths = ProjectPaths.for_project(tmp_path / "project")
        paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings: dict[str, Any] = {
            "runner": {
                "claudePath": str(fake_claude_path),
                "idleTimeoutSeconds": 30,
                "hardTimeoutSeconds": 60,
                "killGraceSeconds": 1,
            },
            "limits": {
                "maxConcurrentRuns": 4,
                "maxWorkers": 16,
                "workerIdleSeconds": 60,
                "shutdownGraceSeconds": 2,
            },
        }
        _merge(settings, overrides)
        paths.settings_file.write_text(json.dumps(settings))
        paths.settings_file.chmod(0o600)
        return paths

    return make


def discord_settings(fake: FakeDiscord, *, listen: bool = True, **extra: Any) -> dict[str, Any]:
    """The ``discord`` settings for the fake: its token, alice allowed, the listen channel
    (unless ``listen=False``), no progress message within a test; ``extra`` on top."""
    settings: dict[str, Any] = {
        "token": fake.token,
        "allowedUserIds": [fake.alice["id"]],
        "progressAfterSeconds": 60,
    }
    if listen:
        settings["listenChannels"] = [fake.listen_id]
    settings.update(extra)
    return settings


def new_supervisor(paths: ProjectPaths, *, discord: bool = False) -> Supervisor:
    """The daemon for ``paths`` (not started), logging JSON. With ``discord``, its client
    does not wait for more guilds than the fake's (they all come at once)."""
    return Supervisor(
        paths,
        load_settings(paths.settings_file),
        log_mode="json",
        frontend_options={"guild_ready_timeout": 0.01} if discord else None,
    )


async def started_supervisor(paths: ProjectPaths, *, discord: bool = False) -> Supervisor:
    """:func:`new_supervisor`, started; the caller shuts it down."""
    supervisor = new_supervisor(paths, discord=discord)
    await supervisor.startup()
    return supervisor


SupervisorStarter = Callable[..., Awaitable[Supervisor]]


@pytest.fixture
async def start_supervisor() -> AsyncIterator[SupervisorStarter]:
    """``await start_supervisor(paths, discord=...)``: a started daemon, shut down after the
    test. Request it after ``fake_discord`` so the daemons stop before the fake does."""
    started: list[Supervisor] = []

    async def start(paths: ProjectPaths, *, discord: bool = False) -> Supervisor:
        supervisor = await started_supervisor(paths, discord=discord)
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        await supervisor.shutdown()


@pytest.fixture
async def daemon(make_project: ProjectFactory) -> AsyncIterator[Supervisor]:
    """A running in-process supervisor with default test settings."""
    supervisor = await started_supervisor(make_project())
    try:
        yield supervisor
    finally:
        await supervisor.shutdown()


async def collect(
    dispatcher: Any,
    key: SessionKey | str,
    prompt: str,
    on_event: Callable[[RunEvent], None] | None = None,
) -> list[RunEvent]:
    """Submit ``prompt`` and return all its events (the last is done or failed)."""
    events: list[RunEvent] = []
    async with asyncio.timeout(60):
        async for event in dispatcher.submit(SessionKey(str(key)), prompt, origin="test"):
            events.append(event)
            if on_event is not None:
                on_event(event)
            if is_final(event):
                break
    return events


async def without_spare(pool: WorkerPool) -> None:
    """No pre-forked spare from now on: new keys fork their worker (the plain path)."""
    pool.keep_spare = False
    spare = pool._drop_spare("test")
    if spare is not None and spare.process is not None:
        await spare.exited.wait()


def final(events: list[RunEvent]) -> RunDone | RunFailed:
    """The last event, which must be the run's end."""
    last = events[-1]
    assert isinstance(last, RunDone | RunFailed)
    return last


def started(events: list[RunEvent]) -> list[RunStarted]:
    return [e for e in events if isinstance(e, RunStarted)]


async def wait_for(predicate: Callable[[], object], what: str, within: float = 20.0) -> None:
    """Await a condition the daemon reaches on its own (the timeout is a safety net, not a
    sleep). ``predicate`` may be a coroutine function; ``what`` names it on a timeout."""
    try:
        async with asyncio.timeout(within):
            while True:
                result = predicate()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None


class DaemonProcess:
    """``claudeclaw run`` in a subprocess; ``wait_ready`` awaits its control socket."""

    def __init__(self, paths: ProjectPaths, env: dict[str, str]) -> None:
        self.paths = paths
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = paths.root / "daemon.log"

    def start(self) -> None:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "claudeclaw",
                "run",
                "--project",
                str(self.paths.root),
                "--log-mode",
                "json",
            ],
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    async def wait_ready(self, within: float = 20) -> None:
        async with asyncio.timeout(within):
            while not await control.daemon_running(self.paths):
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited: {self.log.read_text()[-2000:]}")
                await asyncio.sleep(0.05)

    async def wait_exit(self, within: float = 30) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, within)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def daemon_process(make_project: ProjectFactory) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(paths: ProjectPaths | None = None, **overrides: Any) -> DaemonProcess:
        proc = DaemonProcess(paths or make_project(**overrides), dict(os.environ))
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(Exception):
            proc.kill()
