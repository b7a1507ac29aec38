"""doctor: each check with a fake ``claude``, a missing one, modes, token, allowlist, root."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from claudeclaw import doctor
from claudeclaw.config import write_starter_settings
from claudeclaw.doctor import Check, exit_code, format_checks, run_checks
from claudeclaw.paths import ProjectPaths
from claudeclaw.service import ServiceLayout

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


def logged_in(tmp_path: Path, name: str = "home") -> Path:
    """A HOME where ``claude`` has been logged in (what /login leaves behind)."""
    home = tmp_path / name
    (home / ".claude").mkdir(parents=True)
    creds = home / ".claude" / ".credentials.json"
    creds.write_text(json.dumps({"claudeAiOauth": {"accessToken": "sk-ant-oat01-x" * 3}}))
    return home


async def test_all_good(tmp_path: Path) -> None:
    paths = project(tmp_path)
    doc = json.loads(paths.settings_file.read_text())
    doc["security"]["level"] = "strict"  # one user: only strict/locked have no Bash
    paths.settings_file.write_text(json.dumps(doc))
    bin_dir = tmp_path / "bin"
    fake_claude(bin_dir)
    env = {"PATH": str(bin_dir), "DISCORD_TOKEN": TOKEN, "HOME": str(logged_in(tmp_path))}
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


# ---- issue 12: the installed layout, Claude's login, never crashing --------------------


def layout(tmp_path: Path, paths: ProjectPaths, user: str) -> ServiceLayout:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    return ServiceLayout(
        unit_file=tmp_path / "claudeclaw.service",
        user=user,
        project=paths.root,
        home=paths.root,
        credentials={
            "discord-token": etc / "discord-token",
            "anthropic-api-key": etc / "anthropic-api-key",
        },
    )


def me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


async def test_login_missing_says_how_to_log_in(tmp_path: Path) -> None:
    paths = project(tmp_path)
    home = tmp_path / "empty-home"
    home.mkdir()
    checks = await run_checks(paths, {"PATH": "", "DISCORD_TOKEN": TOKEN, "HOME": str(home)})
    login = by_name(checks)["claude login"]
    assert login.status == "fail" and "not logged in" in login.detail
    assert str(home / ".claude" / ".credentials.json") in login.detail
    assert "/login" in login.fix
    env = {"PATH": "", "DISCORD_TOKEN": TOKEN, "HOME": str(home), "ANTHROPIC_API_KEY": "k" * 20}
    login = by_name(await run_checks(paths, env))["claude login"]
    assert login.status == "ok" and "ANTHROPIC_API_KEY" in login.detail
    assert "k" * 20 not in login.detail


async def test_console_key_in_settings_api_is_explained(tmp_path: Path) -> None:
    paths = project(tmp_path)
    doc = json.loads(paths.settings_file.read_text())
    doc["api"] = "sk-ant-api03-" + "x" * 40
    paths.settings_file.write_text(json.dumps(doc))
    env = {"PATH": "", "DISCORD_TOKEN": TOKEN, "HOME": str(tmp_path / "nohome")}
    checks = await run_checks(paths, env)
    named = by_name(checks)
    assert named["claude login"].status == "ok"
    assert "ANTHROPIC_AUTH_TOKEN" in named["claude login"].detail
    warn = named["claude api key"]
    assert warn.status == "warn" and "ANTHROPIC_API_KEY" in warn.detail
    assert "anthropic-api-key" in warn.fix
    assert "x" * 40 not in format_checks(checks)


async def test_installed_layout_token_file_named_not_what_the_unit_already_does(
    tmp_path: Path,
) -> None:
    """Issue 12.3: run as README step 6 says (the service's user, no credentials
    directory), the token check looks at the unit's credential file."""
    paths = project(tmp_path)
    service = layout(tmp_path, paths, me())
    token_file = service.credentials["discord-token"]
    env = {"PATH": "", "HOME": "/nonexistent"}

    checks = await run_checks(paths, env, service=service)
    token = by_name(checks)["discord token"]
    assert token.status == "fail" and "status=243/CREDENTIALS" in token.detail
    assert "LoadCredential" not in token.fix  # the unit already does that

    token_file.write_text("")
    token_file.chmod(0o600)
    token = by_name(await run_checks(paths, env, service=service))["discord token"]
    assert token.status == "fail" and "is empty" in token.detail
    assert f"cat > {token_file}" in token.fix

    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    token = by_name(await run_checks(paths, env, service=service))["discord token"]
    assert token.status == "fail" and token.fix == f"sudo chmod 600 {token_file}"

    token_file.chmod(0o600)
    checks = await run_checks(paths, env, service=service)
    token = by_name(checks)["discord token"]
    assert token.status == "ok" and str(token_file) in token.detail
    assert TOKEN not in format_checks(checks)
    # the login is looked for in the service's HOME, not the caller's
    login = by_name(checks)["claude login"]
    assert login.status == "fail" and str(paths.root / ".claude") in login.detail
    assert f"sudo -u {me()} env HOME={paths.root} claude" in login.fix
    service.credentials["anthropic-api-key"].write_text("sk-ant-api03-" + "y" * 40)
    service.credentials["anthropic-api-key"].chmod(0o600)
    login = by_name(await run_checks(paths, env, service=service))["claude login"]
    assert login.status == "ok" and "ANTHROPIC_API_KEY" in login.detail


async def test_installed_layout_owner_checked_against_the_service_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.3: as root, files are checked against the unit's User=, and the fix
    hands them to that user (never ``chown -R 0``)."""
    if os.getuid() != 0:
        pytest.skip("needs root to create files owned by another user")
    monkeypatch.setattr(doctor, "_euid", lambda: 0)
    paths = project(tmp_path)  # owned by root, as if copied in by root
    service = layout(tmp_path, paths, "nobody")
    checks = await run_checks(paths, {"PATH": ""}, service=service)
    named = by_name(checks)
    state = named["state directory"]
    assert state.status == "fail" and "not to the service's user (nobody)" in state.detail
    assert state.fix == f"sudo chown -R nobody: {paths.state_dir}"
    files = [c for c in checks if c.name == "state files" and c.status == "fail"]
    assert files and "settings.json (root)" in files[0].detail
    assert files[0].fix.startswith("sudo chown nobody: ")
    assert "chown -R 0" not in format_checks(checks)
    assert named["user"].status == "ok" and "runs as nobody" in named["user"].detail


async def test_permission_denied_gives_the_sudo_hint_and_never_crashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = project(tmp_path)
    service = layout(tmp_path, paths, "nobody")

    def denied(*_args: object) -> list[Check]:
        raise PermissionError(13, "Permission denied", str(paths.state_dir))

    def broken(*_args: object) -> list[Check]:
        raise RuntimeError("something odd")

    monkeypatch.setattr(doctor, "_check_state_dir", denied)
    monkeypatch.setattr(doctor, "_check_claude_login", broken)
    checks = await run_checks(paths, {"PATH": ""}, service=service)
    state = by_name(checks)["state directory"]
    assert state.status == "fail" and "permission denied" in state.detail
    assert state.fix == f"run me as `sudo -u nobody claudeclaw doctor --project {paths.root}`"
    assert "something odd" in by_name(checks)["claude login"].detail


async def test_job_file_errors_and_the_originals_inert_keys_are_reported(tmp_path: Path) -> None:
    paths = project(tmp_path)
    doc = json.loads(paths.settings_file.read_text())
    doc["telegram"] = {"token": "123:abc", "allowedUserIds": []}
    doc["fallback"] = {"model": "glm", "api": ""}
    doc["web"] = {"enabled": False, "port": 4632}  # off: not reported
    doc["heartbeat"]["forwardToTelegram"] = True
    paths.settings_file.write_text(json.dumps(doc))
    paths.jobs_dir.mkdir(parents=True)
    (paths.jobs_dir / "good.md").write_text("---\nschedule: 0 9 * * *\n---\nhi\n")
    (paths.jobs_dir / "bad.md").write_text("---\nschedule: 0 25 * * *\n---\nhi\n")
    checks = await run_checks(paths, {"PATH": "", "DISCORD_TOKEN": TOKEN})
    named = by_name(checks)
    jobs = named["jobs"]
    assert jobs.status == "warn"
    assert "1 usable, 1 skipped" in jobs.detail
    assert "bad.md: schedule: invalid cron expression '0 25 * * *'" in jobs.detail
    inert = named["original's keys"]
    assert inert.status == "warn"
    lines = inert.detail.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "telegram.token",
        "fallback.model",
        "heartbeat.forwardToTelegram",
    ]
    assert "123:abc" not in format_checks(checks)


async def test_jobs_ok_when_every_file_parses(tmp_path: Path) -> None:
    paths = project(tmp_path)
    paths.jobs_dir.mkdir(parents=True)
    (paths.jobs_dir / "good.md").write_text("---\nschedule: 0 9 * * *\n---\nhi\n")
    checks = await run_checks(paths, {"PATH": "", "DISCORD_TOKEN": TOKEN})
    assert by_name(checks)["jobs"] == Check("jobs", "ok", "1 job file valid")
    assert "original's keys" not in by_name(checks)


async def test_worktree_workspaces_need_a_git_repository(tmp_path: Path) -> None:
    paths = project(tmp_path)
    doc = json.loads(paths.settings_file.read_text())
    doc["threads"] = {"workspace": "worktree"}
    paths.settings_file.write_text(json.dumps(doc))
    fake_claude(tmp_path / "bin")
    env = {"PATH": str(tmp_path / "bin"), "DISCORD_TOKEN": TOKEN}
    check = by_name(await run_checks(paths, env))["thread workspaces"]
    assert check.status == "fail" and "not inside a git repository" in check.detail
    assert "git init" in check.fix and '"shared"' in check.fix
    ident = ["-c", "user.name=t", "-c", "user.email=t@e.invalid"]
    subprocess.run(["git", "-C", str(paths.root), "init", "-q"], check=True)
    first = ["commit", "-q", "--allow-empty", "-m", "first"]
    subprocess.run(["git", "-C", str(paths.root), *ident, *first], check=True)
    check = by_name(await run_checks(paths, env))["thread workspaces"]
    assert check.status == "ok" and "worktrees" in check.detail


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


# ---- two users (issue 11) in the installed layout (issue 12) ----------------------------

AGENT = "nobody"  # an account that exists everywhere and is not us


def two_user_layout(tmp_path: Path, paths: ProjectPaths) -> tuple[ServiceLayout, Path]:
    """The packaged unit: the daemon is us, claude runs as AGENT with its own HOME."""
    agent_home = tmp_path / "agent-home"
    agent_home.mkdir()
    plain = layout(tmp_path, paths, me())
    service = ServiceLayout(
        unit_file=plain.unit_file,
        user=plain.user,
        project=plain.project,
        home=plain.home,
        credentials=plain.credentials,
        agent_user=AGENT,
        agent_home=agent_home,
    )
    return service, agent_home


async def test_two_users_login_is_looked_for_in_the_agents_home(tmp_path: Path) -> None:
    """claude runs as the agent with HOME=its home: the daemon's own login does not count,
    and the fix logs in the agent, in its home."""
    if os.getuid() == 65534:
        pytest.skip("running as nobody")
    paths = project(tmp_path)
    service, agent_home = two_user_layout(tmp_path, paths)
    env = {"PATH": "", "HOME": "/nonexistent"}
    logged_in(tmp_path, "daemon-home")
    (paths.root / ".claude").mkdir(exist_ok=True)  # the daemon's HOME is the project
    (paths.root / ".claude" / ".credentials.json").write_text(
        (tmp_path / "daemon-home" / ".claude" / ".credentials.json").read_text()
    )
    login = by_name(await run_checks(paths, env, service=service))["claude login"]
    creds = agent_home / ".claude" / ".credentials.json"
    assert login.status == "fail", login
    assert f"not logged in for {AGENT}: no {creds}" in login.detail
    assert login.fix.startswith(
        f"cd {agent_home} && sudo -u {AGENT} env HOME={agent_home} claude, type /login"
    )
    (agent_home / ".claude").mkdir()
    creds.write_text(json.dumps({"claudeAiOauth": {"refreshToken": "sk-ant-ort01-" + "z" * 30}}))
    checks = await run_checks(paths, env, service=service)
    login = by_name(checks)["claude login"]
    assert login.status == "ok" and f"logged in ({creds})" in login.detail
    assert "z" * 30 not in format_checks(checks)


async def test_two_users_an_unreadable_login_file_counts_by_its_existence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's .credentials.json is 0600 and the daemon's user may not read it: that
    it exists is enough; nothing crashes and nothing of it is printed."""
    paths = project(tmp_path)
    service, agent_home = two_user_layout(tmp_path, paths)
    creds = agent_home / ".claude" / ".credentials.json"
    creds.parent.mkdir()
    creds.write_text('{"claudeAiOauth": {"accessToken": "sk-ant-oat01-SECRETSECRET"}}')
    real_read_text = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self == creds:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    checks = await run_checks(paths, {"PATH": ""}, service=service)
    login = by_name(checks)["claude login"]
    assert login.status == "ok", login
    assert f"logged in ({creds}; only" in login.detail and "not checked" in login.detail
    assert "SECRET" not in format_checks(checks)
    creds.write_text("")
    login = by_name(await run_checks(paths, {"PATH": ""}, service=service))["claude login"]
    assert login.status == "fail" and "not logged in" in login.detail


async def test_two_users_the_api_key_credential_still_counts(tmp_path: Path) -> None:
    paths = project(tmp_path)
    service, _ = two_user_layout(tmp_path, paths)
    key = service.credentials["anthropic-api-key"]
    key.write_text("sk-ant-api03-" + "k" * 40)
    key.chmod(0o600)
    checks = await run_checks(paths, {"PATH": ""}, service=service)
    login = by_name(checks)["claude login"]
    assert login.status == "ok" and f"an API key in {key}" in login.detail
    assert "k" * 40 not in format_checks(checks)


@pytest.mark.parametrize("source", ["daemon.json", "environment"])
async def test_two_users_agent_found_without_the_unit(tmp_path: Path, source: str) -> None:
    """A claudeclaw@NAME project (not the installed claudeclaw.service) or doctor inside
    the service: the running daemon's agent, or the unit's variables, say whose login."""
    if os.getuid() == 65534:
        pytest.skip("running as nobody")
    paths = project(tmp_path)
    agent_home = tmp_path / "agent-home" / "work"
    env = {"PATH": "", "HOME": str(logged_in(tmp_path, "daemon-home"))}
    if source == "daemon.json":
        paths.daemon_file.write_text(
            json.dumps({"pid": 1, "agent_user": AGENT, "agent_home": str(agent_home)})
        )
    else:
        env.update(CLAUDECLAW_AGENT_USER=AGENT, CLAUDECLAW_AGENT_HOME=str(agent_home))
    login = by_name(await run_checks(paths, env))["claude login"]
    assert login.status == "fail" and str(agent_home / ".claude") in login.detail, login
    assert f"sudo -u {AGENT} env HOME={agent_home} claude" in login.fix
    logged_in(tmp_path / "agent-home", "work")
    login = by_name(await run_checks(paths, env))["claude login"]
    assert login.status == "ok" and str(agent_home) in login.detail


async def test_two_users_modes_are_accepted_and_real_problems_flagged(tmp_path: Path) -> None:
    """The modes the daemon sets for the agent (root 1770, .claude 0750, state 0710,
    outbox 0770, inbox 0750) pass; a directory that gives the agent more fails."""
    from claudeclaw.agent import share_state_dirs

    paths = project(tmp_path)
    service, _ = two_user_layout(tmp_path, paths)
    share_state_dirs(paths)
    checks = await run_checks(paths, {"PATH": ""}, service=service)
    named = by_name(checks)
    for name in ("state directory", "state files", "shared directories"):
        assert named[name].status == "ok", named[name]
    assert not [
        c for c in checks if c.name in ("state directory", "state files") and c.status != "ok"
    ]

    claude_dir = paths.root / ".claude"
    outbox = paths.state_dir / "outbox" / "discord"
    claude_dir.chmod(0o770)  # the agent could write the CLI's project settings
    outbox.chmod(0o777)
    shared = by_name(await run_checks(paths, {"PATH": ""}, service=service))["shared directories"]
    assert shared.status == "fail", shared
    assert (
        f"{claude_dir} has mode 0770" in shared.detail
        and f"{outbox} has mode 0777" in shared.detail
    )
    assert (
        f"sudo chmod 0750 {claude_dir}" in shared.fix and f"sudo chmod 0770 {outbox}" in shared.fix
    )

    share_state_dirs(paths)
    paths.root.chmod(0o700)  # the agent cannot work here until the next start
    shared = by_name(await run_checks(paths, {"PATH": ""}, service=service))["shared directories"]
    assert shared.status == "warn" and f"{paths.root} (0700, wants 1770)" in shared.detail

    paths.state_dir.chmod(0o750)  # the agent could list the daemon's state
    state = by_name(await run_checks(paths, {"PATH": ""}, service=service))["state directory"]
    assert state.status == "fail" and state.fix == f"sudo chmod 710 {paths.state_dir}"


async def test_one_user_has_no_shared_directories_check(tmp_path: Path) -> None:
    paths = project(tmp_path)
    checks = await run_checks(paths, {"PATH": ""}, service=layout(tmp_path, paths, me()))
    assert "shared directories" not in by_name(checks)
