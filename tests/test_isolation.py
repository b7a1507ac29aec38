"""Isolation without the container: the agent account's argv/env and directory modes, the
erased environment block, what workers inherit, and (real CLI) the deny rules that guard
the daemon's state when claude runs as the daemon's own user.

The two-user mode itself (setpriv, capabilities, the attacks) is tested for real under
systemd in tests/test_systemd_isolation.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from claudeclaw.agent import (
    AgentAccount,
    agent_account,
    agent_argv,
    agent_env,
    share_inbox_file,
    share_state_dirs,
)
from claudeclaw.config import load_settings
from claudeclaw.errors import StateError
from claudeclaw.model import RunDone
from claudeclaw.paths import ProjectPaths, ensure_private_dir
from tests.fake_anthropic import FakeAnthropic
from tests.fixtures_claude import SettingsFactory, run_once
from tests.fixtures_daemon import ProjectFactory, started_supervisor

ACCOUNT = AgentAccount("claudeclaw-agent", 990, 991, Path("/var/lib/claudeclaw-agent"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_agent_argv_switches_user_and_drops_every_capability() -> None:
    argv = agent_argv(["/usr/bin/claude", "-p", "--", "-x"], ACCOUNT)
    assert argv[0].endswith("setpriv")
    assert argv[1:8] == [
        "--reuid=990",
        "--regid=991",
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--no-new-privs",
        "--",
    ]
    assert argv[8:] == ["/usr/bin/claude", "-p", "--", "-x"]


def test_agent_env_is_the_agents_home_and_trusts_the_project_for_git() -> None:
    base = {"HOME": "/var/lib/claudeclaw", "CLAUDE_CONFIG_DIR": "/x", "PATH": "/usr/bin"}
    env = agent_env(base, ACCOUNT, Path("/var/lib/claudeclaw"))
    assert env["HOME"] == "/var/lib/claudeclaw-agent" and "CLAUDE_CONFIG_DIR" not in env
    assert env["USER"] == env["LOGNAME"] == "claudeclaw-agent"
    assert (env["GIT_CONFIG_KEY_0"], env["GIT_CONFIG_VALUE_0"]) == (
        "safe.directory",
        "/var/lib/claudeclaw",
    )
    assert env["PATH"] == "/usr/bin"


def test_an_unknown_agent_user_is_an_error_not_a_fallback() -> None:
    assert agent_account({}) is None
    with pytest.raises(StateError, match="no-such-user-xyz: no such user"):
        agent_account({"CLAUDECLAW_AGENT_USER": "no-such-user-xyz"})


def test_share_state_dirs_opens_only_what_the_agent_needs(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path / "proj")
    ensure_private_dir(paths.state_dir)
    paths.settings_file.write_text("{}")
    paths.settings_file.chmod(0o600)
    share_state_dirs(paths)
    assert _mode(paths.root) == 0o1770  # sticky: .claude cannot be swapped
    assert _mode(paths.root / ".claude") == 0o750
    assert _mode(paths.state_dir) == 0o710  # pass through, list nothing
    assert _mode(paths.outbox_dir) == 0o770 and _mode(paths.outbox_dir.parent) == 0o710
    assert _mode(paths.inbox_dir) == 0o750 and _mode(paths.inbox_dir.parent) == 0o710
    assert _mode(paths.settings_file) == 0o600
    ensure_private_dir(paths.state_dir)  # what every state write does: keeps 0710
    assert _mode(paths.state_dir) == 0o710
    attachment = paths.inbox_dir / "123" / "a.png"
    ensure_private_dir(attachment.parent)
    attachment.write_bytes(b"png")
    attachment.chmod(0o600)
    share_inbox_file(attachment, paths.inbox_dir)
    assert _mode(attachment) == 0o640 and _mode(attachment.parent) == 0o750


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_share_state_dirs_refuses_a_directory_someone_else_owns(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path / "proj")
    ensure_private_dir(paths.state_dir)
    os.chown(paths.state_dir, 65534, 65534)
    with pytest.raises(StateError, match="belongs to uid 65534"):
        share_state_dirs(paths)


def test_a_token_given_in_the_environment_leaves_proc_environ() -> None:
    """/proc/<pid>/environ shows the start-up environment: erased there, kept in os.environ."""
    code = (
        "import os\n"
        "from claudeclaw.secretenv import erase_initial_environ\n"
        "print(erase_initial_environ(['DISCORD_TOKEN', 'ABSENT']))\n"
        "raw = open('/proc/self/environ', 'rb').read()\n"
        "print(b'tok-SECRET-123' in raw, b'DISCORD_TOKEN=**************' in raw)\n"
        "print(os.environ['DISCORD_TOKEN'], os.environ['OTHER'])\n"
    )
    env = dict(os.environ, DISCORD_TOKEN="tok-SECRET-123", OTHER="kept")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["['DISCORD_TOKEN']", "False True", "tok-SECRET-123 kept"]


async def test_workers_inherit_no_credential_but_the_model_providers(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    monkeypatch.setenv("SOME_SERVICE_PASSWORD", "pw")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-dummy")
    paths = make_project()
    supervisor = await started_supervisor(paths)
    try:
        assert supervisor.pool is not None
        env = supervisor.pool.child_env
        assert "GITHUB_TOKEN" not in env and "SOME_SERVICE_PASSWORD" not in env
        assert env["ANTHROPIC_API_KEY"] == "sk-ant-dummy"
    finally:
        await supervisor.shutdown()


async def test_daemon_json_names_the_agent_and_its_home_for_doctor(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """doctor run by hand (a claudeclaw@NAME project) finds claude's login through it."""
    if os.getuid() == 65534:
        pytest.skip("running as nobody")
    monkeypatch.setenv("CLAUDECLAW_AGENT_USER", "nobody")
    monkeypatch.setenv("CLAUDECLAW_AGENT_HOME", "/var/lib/claudeclaw-agent/work")
    paths = make_project()
    supervisor = await started_supervisor(paths)
    try:
        info = json.loads(paths.daemon_file.read_text())
        assert info["agent_user"] == "nobody"
        assert info["agent_home"] == "/var/lib/claudeclaw-agent/work"
    finally:
        await supervisor.shutdown()


def test_the_api_key_and_nothing_else_secret_reaches_claude_run_as_the_agent() -> None:
    """The worker's environment (the daemon put the credential's key in it) through
    build_env and agent_env: what setpriv hands to claude as the agent."""
    from claudeclaw.claude.argv import build_env

    settings = load_settings(Path("/nonexistent/settings.json"), {})
    worker_env = {
        "PATH": "/usr/bin",
        "HOME": "/var/lib/claudeclaw",
        "ANTHROPIC_API_KEY": "sk-ant-api03-" + "k" * 40,
        "CREDENTIALS_DIRECTORY": "/run/credentials/claudeclaw.service",
        "DISCORD_TOKEN": "tok",
        "EXAMPLE_SERVICE_PASSWORD": "pw",
        "CLAUDECLAW_AGENT_USER": "claudeclaw-agent",
        "CLAUDE_CONFIG_DIR": "/var/lib/claudeclaw/.claude",
    }
    env = agent_env(build_env(worker_env, settings), ACCOUNT, Path("/var/lib/claudeclaw"))
    assert env["ANTHROPIC_API_KEY"] == worker_env["ANTHROPIC_API_KEY"]
    assert env["HOME"] == "/var/lib/claudeclaw-agent" and env["USER"] == "claudeclaw-agent"
    for gone in ("CREDENTIALS_DIRECTORY", "DISCORD_TOKEN", "EXAMPLE_SERVICE_PASSWORD",
                 "CLAUDECLAW_AGENT_USER", "CLAUDE_CONFIG_DIR"):  # fmt: skip
        assert gone not in env, gone


# ---- one user: the CLI's deny rules (real CLI) -----------------------------------------


@pytest.mark.realcli
@pytest.mark.parametrize("level", ["locked", "strict", "moderate", "unrestricted"])
async def test_deny_rules_keep_claudes_file_tools_out_of_the_state(
    claude_settings: SettingsFactory,
    real_claude_path: Path,
    real_claude_env: dict[str, str],
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
    level: str,
) -> None:
    """Below unrestricted, Write/Read of settings.json and a Write of the session changes
    journal are refused by the CLI itself and the outbox stays writable; unrestricted (one
    user) protects nothing, as the README says."""
    paths = ProjectPaths(tmp_path / "proj")
    ensure_private_dir(paths.state_dir)
    original = json.dumps({"security": {"level": level}, "discord": {"allowedUserIds": ["1"]}})
    paths.settings_file.write_text(original)
    settings = claude_settings(real_claude_path, level=level)
    evil = json.dumps({"security": {"level": "unrestricted"}})

    async def tool(name: str, tool_input: dict[str, str]) -> str:
        prompt = f"TOOL:{name}:{json.dumps(tool_input)}"
        final = await run_once(settings, prompt, real_claude_env, paths.root, lambda e: None)
        assert isinstance(final, RunDone), final
        return final.reply

    write = await tool("Write", {"file_path": str(paths.settings_file), "content": evil})
    read = await tool("Read", {"file_path": str(paths.settings_file)})
    # a forged session change, which the next start would fold into sessions.json
    forged = '{"op": "record", "key": "1", "value": "someone-elses-session"}\n'
    journal = paths.session_changes_file
    forge = await tool("Write", {"file_path": str(journal), "content": forged})
    outbox = paths.outbox_dir / "chart.svg"
    made = await tool("Write", {"file_path": str(outbox), "content": "<svg/>"})
    if level == "unrestricted":
        assert "is_error=False" in write and paths.settings_file.read_text() == evil
        return
    assert "is_error=True" in write, write
    assert "is_error=True" in forge and not journal.exists(), forge
    assert "is_error=True" in read and "allowedUserIds" not in read, read
    assert paths.settings_file.read_text() == original
    if level == "locked":  # no writing tool at all
        assert "No such tool available" in made
    else:
        assert "is_error=False" in made and outbox.read_text() == "<svg/>", made


# ---- reading what the agent made: links out of its directories are not followed ---------


def test_a_transcript_linked_out_of_the_claude_dir_is_not_read(tmp_path: Path) -> None:
    from claudeclaw.frontend.context import find_transcript, project_dir_name

    config = tmp_path / "agent-home" / ".claude"
    cwd = tmp_path / "proj"
    sid = "0b0e2f4c-1111-4222-8333-444455556666"
    folder = config / "projects" / project_dir_name(cwd)
    folder.mkdir(parents=True)
    secret = tmp_path / "daemon-state" / f"{sid}.jsonl"
    secret.parent.mkdir()
    secret.write_text('{"type":"assistant","message":{"model":"SECRET"}}\n')
    (folder / f"{sid}.jsonl").symlink_to(secret)
    assert find_transcript(sid, cwd, config) is None
    (config / "projects" / "elsewhere").symlink_to(secret.parent)
    assert find_transcript(sid, cwd, config) is None
    (folder / f"{sid}.jsonl").unlink()
    (folder / f"{sid}.jsonl").write_text("{}\n")
    assert find_transcript(sid, cwd, config) == folder / f"{sid}.jsonl"


def test_an_outbox_file_swapped_for_a_link_or_a_fifo_is_not_read(tmp_path: Path) -> None:
    from claudeclaw.frontend.attachments import read_regular_file

    target = tmp_path / "settings.json"
    target.write_text('{"allowedUserIds": ["1"]}')
    link = tmp_path / "chart.png"
    link.symlink_to(target)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    plain = tmp_path / "ok.png"
    plain.write_bytes(b"\x89PNG")
    assert read_regular_file(link) is None
    assert read_regular_file(fifo) is None  # and it did not block
    assert read_regular_file(tmp_path / "gone.png") is None
    assert read_regular_file(plain) == b"\x89PNG"


def test_in_two_user_mode_a_group_that_answers_counts_as_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent's processes are invisible in the daemon's /proc (ProtectProc=invisible):
    the runner must not take an answering group for an empty one, or it would never
    SIGKILL what ignored SIGTERM."""
    from claudeclaw.claude import runner

    monkeypatch.setattr(runner, "agent_account", lambda: ACCOUNT)
    monkeypatch.setattr(os, "listdir", lambda path: [])  # what the daemon sees of /proc
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert runner._group_has_live_members(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not runner._group_has_live_members(proc.pid)
