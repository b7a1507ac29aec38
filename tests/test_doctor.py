"""doctor: each check with a fake ``claude``, a missing one, modes, token, allowlist, root."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from claudeclaw import doctor
from claudeclaw.config import write_starter_settings
from claudeclaw.doctor import Check, exit_code, format_checks, run_checks
from claudeclaw.paths import ProjectPaths

TOKEN = "MTIzNDU2Nzg5MDEy.doctor-secret.xyz"


@pytest.fixture(autouse=True)
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_euid", lambda: 1000)


def fake_claude(directory: Path, body: str = "echo '2.1.330 (Claude Code)'") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "claude"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return exe


def project(tmp_path: Path, discord: dict[str, object] | None = None) -> ProjectPaths:
    paths = ProjectPaths(tmp_path / "proj")
    write_starter_settings(paths)
    doc = json.loads(paths.settings_file.read_text())
    doc["discord"].update(discord or {"allowedUserIds": ["123"]})
    paths.settings_file.write_text(json.dumps(doc))
    return paths


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


async def test_all_good(tmp_path: Path) -> None:
    paths = project(tmp_path)
    doc = json.loads(paths.settings_file.read_text())
    doc["security"]["level"] = "strict"  # one user: only strict/locked have no Bash
    paths.settings_file.write_text(json.dumps(doc))
    bin_dir = tmp_path / "bin"
    fake_claude(bin_dir)
    env = {"PATH": str(bin_dir), "DISCORD_TOKEN": TOKEN}
    checks = await run_checks(paths, env)
    named = by_name(checks)
    assert [c.status for c in checks] == ["ok"] * len(checks), format_checks(checks)
    assert "2.1.330 (Claude Code)" in named["claude"].detail
    assert str(bin_dir / "claude") in named["claude"].detail
    assert "DISCORD_TOKEN" in named["discord token"].detail
    assert named["allowlist"].detail == "1 allowed user"
    assert exit_code(checks) == 0
    text = format_checks(checks)
    assert TOKEN not in text and TOKEN not in repr(checks)


async def test_missing_claude(tmp_path: Path) -> None:
    paths = project(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    checks = await run_checks(paths, {"PATH": str(empty), "DISCORD_TOKEN": TOKEN})
    claude = by_name(checks)["claude"]
    assert claude.status == "fail"
    assert "not found on PATH" in claude.detail
    assert "runner.claudePath" in claude.fix
    assert exit_code(checks) != 0
    assert "fix: " in format_checks(checks)


async def test_claude_path_from_settings_relative_to_project(tmp_path: Path) -> None:
    paths = project(tmp_path)
    fake_claude(paths.root / "tools")
    doc = json.loads(paths.settings_file.read_text())
    doc["runner"]["claudePath"] = "tools/claude"
    paths.settings_file.write_text(json.dumps(doc))
    checks = await run_checks(paths, {"PATH": "", "DISCORD_TOKEN": TOKEN})
    assert by_name(checks)["claude"].status == "ok"


async def test_claude_version_failing(tmp_path: Path) -> None:
    paths = project(tmp_path)
    bin_dir = tmp_path / "bin"
    fake_claude(bin_dir, "echo 'boom: not logged in' >&2; exit 3")
    checks = await run_checks(paths, {"PATH": str(bin_dir), "DISCORD_TOKEN": TOKEN})
    claude = by_name(checks)["claude"]
    assert claude.status == "fail" and "exited with 3" in claude.detail
    assert "boom" in claude.detail


async def test_claude_version_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "VERSION_TIMEOUT_SECONDS", 0.2)
    paths = project(tmp_path)
    bin_dir = tmp_path / "bin"
    fake_claude(bin_dir, f"exec {sys.executable} -c 'import time; time.sleep(30)'")
    checks = await run_checks(paths, {"PATH": str(bin_dir), "DISCORD_TOKEN": TOKEN})
    claude = by_name(checks)["claude"]
    assert claude.status == "fail" and "did not answer" in claude.detail


async def test_no_settings_file(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path / "fresh")
    checks = await run_checks(paths, {"PATH": ""})
    named = by_name(checks)
    assert named["settings"].status == "warn"
    assert "claudeclaw init" in named["settings"].fix
    assert named["state directory"].status == "warn"
    assert named["discord token"].status == "fail"
    assert named["allowlist"].status == "warn"
    assert "answer nobody" in named["allowlist"].detail


async def test_invalid_settings_listed(tmp_path: Path) -> None:
    paths = project(tmp_path, {"allowedUserIds": ["abc"], "token": 5})
    checks = await run_checks(paths, {"PATH": ""})
    settings = by_name(checks)["settings"]
    assert settings.status == "fail"
    assert "discord.allowedUserIds[0]" in settings.detail
    assert "discord.token" in settings.detail
    assert "discord token" not in by_name(checks)  # needs valid settings


async def test_settings_warnings_reported(tmp_path: Path) -> None:
    paths = project(tmp_path)
    doc = json.loads(paths.settings_file.read_text())
    doc["limits"]["maxWorker"] = 3
    paths.settings_file.write_text(json.dumps(doc))
    checks = await run_checks(paths, {"PATH": "", "DISCORD_TOKEN": TOKEN})
    warning = by_name(checks)["settings warnings"]
    assert warning.status == "warn" and "maxWorkers" in warning.detail


async def test_modes_checked_with_chmod_fix(tmp_path: Path) -> None:
    paths = project(tmp_path)
    os.chmod(paths.state_dir, 0o755)
    paths.thread_sessions_file.write_text("{}")
    os.chmod(paths.thread_sessions_file, 0o644)
    os.chmod(paths.settings_file, 0o640)
    checks = await run_checks(paths, {"PATH": "", "DISCORD_TOKEN": TOKEN})
    named = by_name(checks)
    assert named["state directory"].status == "fail"
    assert named["state directory"].fix == f"chmod 700 {paths.state_dir}"
    files = named["state files"]
    assert files.status == "fail"
    assert "sessions.json (0644)" in files.detail and "settings.json (0640)" in files.detail
    assert files.fix.startswith("chmod 600 ")
    assert str(paths.thread_sessions_file) in files.fix


async def test_token_sources_never_printed(tmp_path: Path) -> None:
    paths = project(tmp_path, {"allowedUserIds": ["1"], "token": TOKEN})
    checks = await run_checks(paths, {"PATH": ""})
    token = by_name(checks)["discord token"]
    assert token.status == "ok" and "settings.json" in token.detail
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "discord-token").write_text(TOKEN + "-cred")
    checks = await run_checks(paths, {"PATH": "", "CREDENTIALS_DIRECTORY": str(creds)})
    assert "credential" in by_name(checks)["discord token"].detail
    assert TOKEN not in format_checks(checks)


async def test_allowlist_star_warns(tmp_path: Path) -> None:
    paths = project(tmp_path, {"allowedUserIds": "*"})
    checks = await run_checks(paths, {"PATH": "", "DISCORD_TOKEN": TOKEN})
    allow = by_name(checks)["allowlist"]
    assert allow.status == "warn" and "open to everyone" in allow.detail


async def test_root_without_sandbox_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_euid", lambda: 0)
    paths = project(tmp_path)
    checks = await run_checks(paths, {"PATH": "", "DISCORD_TOKEN": TOKEN})
    user = by_name(checks)["user"]
    assert user.status == "fail"
    assert "dangerously-skip-permissions" in user.detail
    assert "dedicated" in user.fix
    checks = await run_checks(paths, {"PATH": "", "DISCORD_TOKEN": TOKEN, "IS_SANDBOX": "1"})
    assert by_name(checks)["user"].status == "ok"


def test_format_and_exit_code() -> None:
    checks = [
        Check("a", "ok", "fine", "never shown"),
        Check("b", "warn", "hmm\nsecond line", "do x"),
        Check("c", "fail", "broken", "do y"),
    ]
    text = format_checks(checks)
    assert text.splitlines() == [
        "[ok  ] a: fine",
        "[WARN] b: hmm",
        "         second line",
        "         fix: do x",
        "[FAIL] c: broken",
        "         fix: do y",
    ]
    assert exit_code(checks) == 1
    assert exit_code(checks[:2]) == 0


@pytest.mark.parametrize(
    ("level", "agent", "status", "words"),
    [
        ("moderate", "", "warn", ["Bash tool runs as you", "allowlist", "signal the daemon"]),
        ("unrestricted", "", "warn", ["can do all this user can", "allowlist"]),
        ("locked", "", "ok", ["no Bash", "deny rules", "not the OS"]),
        ("moderate", "nobody", "ok", ["two users", "runs as nobody", "cannot write"]),
        ("strict", "no-such-user-xyz", "fail", ["no such user"]),
    ],
)
async def test_isolation_says_what_claude_can_reach(
    tmp_path: Path, level: str, agent: str, status: str, words: list[str]
) -> None:
    if agent == "nobody" and os.getuid() == 65534:
        pytest.skip("running as nobody")
    paths = project(tmp_path)
    doc = json.loads(paths.settings_file.read_text())
    doc["security"]["level"] = level
    paths.settings_file.write_text(json.dumps(doc))
    env = {"PATH": "/nonexistent", "CLAUDECLAW_AGENT_USER": agent}
    check = by_name(await run_checks(paths, env))["isolation"]
    assert check.status == status, check
    for word in words:
        assert word in check.detail, (word, check.detail)
    if status != "ok":
        assert check.fix


async def test_isolation_of_the_running_daemon_counts_when_run_by_hand(tmp_path: Path) -> None:
    """`claudeclaw doctor` by hand has no CLAUDECLAW_AGENT_USER; the daemon.json has it."""
    paths = project(tmp_path)
    paths.daemon_file.write_text(json.dumps({"pid": 1, "agent_user": "nobody"}))
    check = by_name(await run_checks(paths, {"PATH": "/nonexistent"}))["isolation"]
    if os.getuid() != 65534:
        assert check.status == "ok" and "runs as nobody" in check.detail, check
