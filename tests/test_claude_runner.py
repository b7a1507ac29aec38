"""run_claude against the fake ``claude``: events, sessions, errors, timeouts, kills."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import psutil
import pytest
from structlog.testing import capture_logs

from claudeclaw.claude import runner
from claudeclaw.claude.runner import run_claude
from claudeclaw.config import Settings
from claudeclaw.model import RunDone, RunEvent, RunFailed, RunProgress, RunSession, RunStarted
from tests.fixtures_claude import SettingsFactory, run_once

SAFETY = 30  # seconds: a safety net only; every wait below awaits a real event


class Recorder:
    """Collects run events and lets a test await a kind of event."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self._seen: dict[str, asyncio.Event] = {}

    def __call__(self, event: RunEvent) -> None:
        self.events.append(event)
        self._flag(event.kind).set()

    def _flag(self, kind: str) -> asyncio.Event:
        return self._seen.setdefault(kind, asyncio.Event())

    async def wait_for(self, kind: str) -> None:
        await asyncio.wait_for(self._flag(kind).wait(), SAFETY)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def started(self) -> list[RunStarted]:
        return [e for e in self.events if isinstance(e, RunStarted)]

    def sessions(self) -> list[RunSession]:
        return [e for e in self.events if isinstance(e, RunSession)]

    def progress(self) -> list[RunProgress]:
        return [e for e in self.events if isinstance(e, RunProgress)]

    @property
    def pids(self) -> list[int]:
        return [e.pid for e in self.events if isinstance(e, RunStarted)]


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for whoever adopted it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def settings(claude_settings: SettingsFactory, fake_claude_path: Path) -> Settings:
    return claude_settings(fake_claude_path)


async def run(
    settings: Settings,
    prompt: str,
    env: dict[str, str],
    cwd: Path,
    *,
    session_id: str | None = None,
    recorder: Recorder | None = None,
) -> tuple[RunDone | RunFailed, Recorder]:
    recorder = recorder or Recorder()
    final = await run_once(
        settings, prompt, env, cwd, recorder, session_id=session_id, msg_id="msg-1", within=SAFETY
    )
    return final, recorder


async def test_success_records_the_new_session_from_init(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    final, rec = await run(settings, "hello there", fake_claude_env, workdir)
    assert isinstance(final, RunDone)
    assert final.reply == "FAKE-REPLY turn=1 last=hello there"
    assert rec.kinds() == ["started", "session", "progress"]
    started, session, progress = rec.events
    assert isinstance(started, RunStarted) and started.resumed is False and started.pid > 0
    assert len(started.run_id) == 12
    assert isinstance(session, RunSession) and uuid.UUID(session.session_id)
    assert final.session_id == session.session_id
    assert progress == RunProgress(msg_id="msg-1", text="FAKE-REPLY turn=1 last=hello there")
    assert final.num_turns == 1 and final.cost_usd > 0 and final.context_reset is False
    assert gone(started.pid)


async def test_a_prompt_no_argv_can_hold_is_mended_not_a_crash(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    """A NUL and half an emoji (a lone surrogate, e.g. from a settings.json escape) cannot
    pass through argv: the run gets U+FFFD for the half and nothing for the NUL."""
    final, _ = await run(settings, "a\x00b \ud83d c", fake_claude_env, workdir)
    assert isinstance(final, RunDone), final
    assert final.reply == "FAKE-REPLY turn=1 last=ab \ufffd c"


async def test_resume_continues_the_session(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    first, _ = await run(settings, "one", fake_claude_env, workdir)
    assert isinstance(first, RunDone)
    second, rec = await run(settings, "two", fake_claude_env, workdir, session_id=first.session_id)
    assert isinstance(second, RunDone)
    assert second.reply == "FAKE-REPLY turn=2 last=two"
    assert second.session_id == first.session_id and second.context_reset is False
    assert [e.resumed for e in rec.started()] == [True]


async def test_dead_session_id_is_replaced_by_a_new_session(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    dead = str(uuid.uuid4())
    final, rec = await run(settings, "hi", fake_claude_env, workdir, session_id=dead)
    assert isinstance(final, RunDone)
    assert final.context_reset is True
    assert final.reply == "FAKE-REPLY turn=1 last=hi"
    assert final.session_id != dead
    assert [e.resumed for e in rec.started()] == [True, False]
    assert rec.sessions() == [RunSession(msg_id="msg-1", session_id=final.session_id)]


async def test_corrupted_thinking_signature_starts_a_new_session(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    first, _ = await run(settings, "one", fake_claude_env, workdir)
    assert isinstance(first, RunDone)
    final, _ = await run(
        settings, "ERROR:thinking", fake_claude_env, workdir, session_id=first.session_id
    )
    assert isinstance(final, RunDone) and final.context_reset is True
    assert final.session_id != first.session_id
    assert final.reply.startswith("FAKE-REPLY turn=1 ")


async def test_invalid_session_id_is_not_resumed(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    final, rec = await run(settings, "hi", fake_claude_env, workdir, session_id="--version")
    assert isinstance(final, RunDone) and final.reply == "FAKE-REPLY turn=1 last=hi"
    assert [e.resumed for e in rec.started()] == [False]


@pytest.mark.parametrize(
    ("prompt", "message_has", "has_session"),
    [
        ("ERROR:api500", "Claude failed: API Error: 500 fake error 500", True),
        ("ERROR:api401", "Failed to authenticate", True),
        ("ERROR:max_turns", "Reached maximum number of turns (1)", True),
        ("CRASH", "simulated crash (CRASH directive)", True),
        ("NO_RESULT", "exited with code 0 without a result", True),
    ],
)
async def test_errors_become_helpful_failures(
    settings: Settings,
    fake_claude_env: dict[str, str],
    workdir: Path,
    prompt: str,
    message_has: str,
    has_session: bool,
) -> None:
    final, rec = await run(settings, prompt, fake_claude_env, workdir)
    assert isinstance(final, RunFailed)
    assert final.reason == "error"
    assert message_has in final.message
    sessions = rec.sessions()
    assert bool(final.session_id) is has_session
    assert [s.session_id for s in sessions] == [final.session_id]
    assert gone(rec.pids[0])


async def test_stream_json_without_verbose_is_refused_like_the_real_cli(
    fake_claude_path: Path, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(fake_claude_path),
        "-p",
        "--output-format",
        "stream-json",
        "--",
        "hi",
        env=fake_claude_env,
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 1 and out == b""
    assert b"requires --verbose" in err


async def test_usage_limit_is_reported_with_retry_at(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    final, recorder = await run(settings, "ERROR:ratelimit", fake_claude_env, workdir)
    assert isinstance(final, RunFailed) and final.reason == "rate_limited"
    assert final.retry_at.endswith("T15:00:00+00:00")
    assert "resets at" in final.message
    assert len(recorder.started()) == 1  # the pool waits for the reset, not the runner


async def test_an_api_429_is_retried_with_backoff_for_this_run(
    settings: Settings,
    fake_claude_env: dict[str, str],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain API 429 (after the CLI's own retries) is not the usage limit: the run is
    tried again after a pause and answers; it is not reported as rate_limited."""
    monkeypatch.setattr(runner, "API_RETRY_DELAYS", (0.01, 0.01))
    with capture_logs() as logs:
        final, recorder = await run(settings, "hi ERROR:api429_once", fake_claude_env, workdir)
    assert isinstance(final, RunDone), final
    assert len(recorder.started()) == 2
    assert [e["event"] for e in logs].count("claude.api_throttled") == 1


async def test_an_api_429_that_persists_fails_this_run_only(
    settings: Settings,
    fake_claude_env: dict[str, str],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "API_RETRY_DELAYS", (0.01, 0.01))
    final, recorder = await run(settings, "ERROR:api429", fake_claude_env, workdir)
    assert isinstance(final, RunFailed) and final.reason == "error"
    assert final.retry_at == "" and "rate limited" in final.message
    assert len(recorder.started()) == 3  # once, then the two retries


async def test_idle_timeout_kills_the_run(
    claude_settings: SettingsFactory,
    fake_claude_path: Path,
    fake_claude_env: dict[str, str],
    workdir: Path,
) -> None:
    settings = claude_settings(fake_claude_path, idle_timeout_seconds=0.5)
    final, rec = await run(settings, "HANG", fake_claude_env, workdir)
    assert isinstance(final, RunFailed) and final.reason == "timeout"
    assert "no output for 0.5 s" in final.message
    assert final.session_id and final.session_id == rec.sessions()[0].session_id
    assert gone(rec.pids[0])


async def test_hard_timeout_kills_the_run(
    claude_settings: SettingsFactory,
    fake_claude_path: Path,
    fake_claude_env: dict[str, str],
    workdir: Path,
) -> None:
    settings = claude_settings(fake_claude_path, idle_timeout_seconds=20, hard_timeout_seconds=0.7)
    final, rec = await run(settings, "SLEEP:60", fake_claude_env, workdir)
    assert isinstance(final, RunFailed) and final.reason == "timeout"
    assert "after 0.7 s" in final.message
    assert gone(rec.pids[0])


async def test_hung_run_is_killed_with_its_grandchild(
    claude_settings: SettingsFactory,
    fake_claude_path: Path,
    fake_claude_env: dict[str, str],
    workdir: Path,
) -> None:
    """1. The fake starts `sleep 1000` in its group and hangs. 2. The idle timeout fires.
    Result: the fake and the grandchild are both dead when run_claude returns."""
    settings = claude_settings(fake_claude_path, idle_timeout_seconds=0.5)
    final, rec = await run(settings, "GRANDCHILD", fake_claude_env, workdir)
    assert isinstance(final, RunFailed) and final.reason == "timeout"
    grandchild = int((Path(fake_claude_env["FAKE_CLAUDE_STATE"]) / "grandchild.pid").read_text())
    assert gone(rec.pids[0])
    assert gone(grandchild)


async def test_leftover_child_holding_stdout_is_killed_after_claude_exits(
    settings: Settings,
    fake_claude_env: dict[str, str],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1. The fake leaves `sleep 1000` behind, holding its stdout, and exits with a result.
    Result: the reply is returned (not a timeout) and the leftover is dead."""
    monkeypatch.setattr(runner, "EXIT_LINGER_SECONDS", 0.2)
    final, rec = await run(settings, "BACKGROUND", fake_claude_env, workdir)
    assert isinstance(final, RunDone) and final.reply == "FAKE-REPLY turn=1 last=BACKGROUND"
    leftover = int((Path(fake_claude_env["FAKE_CLAUDE_STATE"]) / "background.pid").read_text())
    assert gone(rec.pids[0]) and gone(leftover)


async def test_term_ignored_escalates_to_kill(
    claude_settings: SettingsFactory,
    fake_claude_path: Path,
    fake_claude_env: dict[str, str],
    workdir: Path,
) -> None:
    settings = claude_settings(fake_claude_path, idle_timeout_seconds=0.3, kill_grace_seconds=0.3)
    with capture_logs() as logs:
        final, rec = await run(settings, "IGNORE_TERM HANG", fake_claude_env, workdir)
    assert isinstance(final, RunFailed) and final.reason == "timeout"
    assert gone(rec.pids[0])
    assert any(entry["event"] == "claude.group_killed" for entry in logs)
    exited = [entry for entry in logs if entry["event"] == "claude.exited"]
    assert exited and exited[0]["rc"] == -9


async def test_cancel_kills_the_group_and_reraises(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    rec = Recorder()
    task = asyncio.create_task(
        run_claude(
            settings,
            "GRANDCHILD",
            session_id=None,
            msg_id="msg-1",
            cwd=workdir,
            on_event=rec,
            env=fake_claude_env,
        )
    )
    await rec.wait_for("session")  # the grandchild pid file is written before init
    grandchild = int((Path(fake_claude_env["FAKE_CLAUDE_STATE"]) / "grandchild.pid").read_text())
    assert not gone(grandchild)
    pid = rec.pids[0]
    assert os.getpgid(pid) == pid  # claude leads its own process group...
    assert os.getpgid(grandchild) == pid  # ...which holds what it started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, SAFETY)
    assert gone(rec.pids[0])
    assert gone(grandchild)


async def test_garbage_lines_are_skipped(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    with capture_logs() as logs:
        final, _ = await run(settings, "GARBAGE please", fake_claude_env, workdir)
    assert isinstance(final, RunDone) and final.reply == "FAKE-REPLY turn=1 last=GARBAGE please"
    assert sum(entry["event"] == "claude.garbage_line" for entry in logs) == 3


async def test_tool_use_is_reported_as_progress(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    prompt = 'TOOL:Bash:{"command": "ls -la /srv/data && echo done"} list it'
    final, rec = await run(settings, prompt, fake_claude_env, workdir)
    assert isinstance(final, RunDone) and final.num_turns == 2
    progress = rec.progress()
    assert (
        RunProgress(msg_id="msg-1", tool="Bash", summary="ls -la /srv/data && echo done")
        in progress
    )
    assert RunProgress(msg_id="msg-1", text="Calling Bash.") in progress


async def test_loud_stderr_and_long_lines_do_not_stall(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    final, _ = await run(settings, "STDERR:1000000 BIGLINE:3000000", fake_claude_env, workdir)
    assert isinstance(final, RunDone) and final.reply == "x" * 3_000_000


async def test_missing_executable_is_a_spawn_failure(
    claude_settings: SettingsFactory, fake_claude_env: dict[str, str], workdir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no" / "claude"
    final, rec = await run(claude_settings(missing), "hi", fake_claude_env, workdir)
    assert final == RunFailed(
        msg_id="msg-1",
        reason="spawn",
        message=f"claude executable not found at {missing}: install @anthropic-ai/claude-code "
        "or set runner.claudePath",
    )
    assert rec.events == []


async def test_not_executable_and_missing_cwd_are_spawn_failures(
    claude_settings: SettingsFactory,
    fake_claude_path: Path,
    fake_claude_env: dict[str, str],
    tmp_path: Path,
) -> None:
    plain = tmp_path / "claude"
    plain.write_text("#!/bin/sh\n")
    final, _ = await run(claude_settings(plain), "hi", fake_claude_env, tmp_path)
    assert isinstance(final, RunFailed) and final.reason == "spawn"
    assert "permission denied" in final.message
    final, _ = await run(
        claude_settings(fake_claude_path), "hi", fake_claude_env, tmp_path / "gone"
    )
    assert isinstance(final, RunFailed) and final.reason == "spawn"
    assert "does not exist" in final.message


@pytest.mark.parametrize("prompt", ["--version", "-x --model y", "--"])
async def test_dash_prompt_reaches_claude_as_text(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path, prompt: str
) -> None:
    final, _ = await run(settings, prompt, fake_claude_env, workdir)
    assert isinstance(final, RunDone) and final.reply == f"FAKE-REPLY turn=1 last={prompt}"


async def test_argv_as_claude_sees_it(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    final, _ = await run(settings, "ECHO_ARGV --version", fake_claude_env, workdir)
    assert isinstance(final, RunDone)
    argv = json.loads(final.reply)
    assert argv[:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    assert argv[-2:] == ["--", "ECHO_ARGV --version"]
    assert str(workdir) in argv[argv.index("--append-system-prompt") + 1]


async def test_secrets_are_not_passed_to_claude(
    claude_settings: SettingsFactory,
    fake_claude_path: Path,
    fake_claude_env: dict[str, str],
    workdir: Path,
) -> None:
    token = "discord-bot-token-" + uuid.uuid4().hex
    settings = claude_settings(fake_claude_path, discord_token=token, api="sk-fake-api")
    env = fake_claude_env | {
        "DISCORD_TOKEN": token,
        "SOME_OTHER_NAME": token,
        "CLAUDECODE": "1",
        "CLAUDE_CODE_OAUTH_TOKEN": "frozen",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "1000",
        "KEEP_ME": "yes",
    }
    final, _ = await run(settings, "ECHO_ENV", env, workdir)
    assert isinstance(final, RunDone)
    assert token not in final.reply
    child_env = json.loads(final.reply)
    for name in ("DISCORD_TOKEN", "SOME_OTHER_NAME", "CLAUDECODE", "CLAUDE_CODE_OAUTH_TOKEN"):
        assert name not in child_env
    assert "NOTIFY_SOCKET" not in child_env and "WATCHDOG_USEC" not in child_env
    assert child_env["KEEP_ME"] == "yes"
    assert child_env["ANTHROPIC_AUTH_TOKEN"] == "sk-fake-api"


async def test_default_env_is_os_environ_minus_secrets(
    settings: Settings,
    fake_claude_env: dict[str, str],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in fake_claude_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CLAUDECODE", "1")
    final = await asyncio.wait_for(
        run_claude(
            settings, "ECHO_ENV", session_id=None, msg_id="m", cwd=workdir, on_event=lambda e: None
        ),
        SAFETY,
    )
    assert isinstance(final, RunDone)
    child_env = json.loads(final.reply)
    assert child_env["FAKE_CLAUDE_STATE"] == fake_claude_env["FAKE_CLAUDE_STATE"]
    assert "CLAUDECODE" not in child_env


async def test_broken_listener_does_not_break_the_run(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    def explode(event: RunEvent) -> None:
        raise RuntimeError("listener bug")

    final = await asyncio.wait_for(
        run_claude(
            settings,
            "hi",
            session_id=None,
            msg_id="m",
            cwd=workdir,
            on_event=explode,
            env=fake_claude_env,
        ),
        SAFETY,
    )
    assert isinstance(final, RunDone)


async def test_logs_carry_facts_but_never_the_prompt(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    prompt = "very private prompt text 4f1c"
    with capture_logs() as logs:
        final, rec = await run(settings, prompt, fake_claude_env, workdir)
    assert isinstance(final, RunDone)
    started = next(e for e in logs if e["event"] == "claude.started")
    exited = next(e for e in logs if e["event"] == "claude.exited")
    run_id = rec.started()[0].run_id
    assert started["run_id"] == exited["run_id"] == run_id
    assert started["msg_id"] == "msg-1" and started["prompt_chars"] == len(prompt)
    assert started["pid"] == exited["pid"] == rec.pids[0]
    assert exited["rc"] == 0 and isinstance(exited["duration_ms"], int)
    assert "4f1c" not in repr(logs)


async def test_parallel_runs_do_not_interfere(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    results = await asyncio.gather(
        *(run(settings, f"p{i}", fake_claude_env, workdir) for i in range(4))
    )
    replies = sorted(final.reply for final, _ in results if isinstance(final, RunDone))
    assert replies == [f"FAKE-REPLY turn=1 last=p{i}" for i in range(4)]
    assert len({final.session_id for final, _ in results}) == 4


async def test_a_prompt_too_large_for_argv_goes_through_stdin(
    settings: Settings, fake_claude_env: dict[str, str], workdir: Path
) -> None:
    """Linux caps one argv string at 128 KiB: a prompt with big inlined files (here
    300 KB of multi-byte text) is written to claude's stdin instead, and arrives intact."""
    prompt = "ECHO_ARGV " + "é€" * 60_000 + " end"
    final, _ = await run(settings, prompt, fake_claude_env, workdir)
    assert isinstance(final, RunDone), final
    argv = json.loads(final.reply)
    assert "--" not in argv and all(len(a) < 100_000 for a in argv)
    final, _ = await run(settings, "ÉCHO " + "é€" * 60_000 + " end", fake_claude_env, workdir)
    assert isinstance(final, RunDone), final
    assert final.reply.endswith("é€é€ end") and len(final.reply) > 120_000
