"""The installed service's layout (unit file + drop-ins), credentials, and how commands
without ``--project`` find the service's project (issue 12, items 3, 5, 9)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from claudeclaw import cli, control
from claudeclaw.errors import StateError
from claudeclaw.paths import ProjectPaths
from claudeclaw.service import (
    ServiceLayout,
    find_service,
    parse_unit,
    read_credential,
    token_source_text,
)

REPO = Path(__file__).resolve().parent.parent


def test_the_packaged_unit_is_understood() -> None:
    unit = REPO / "systemd" / "claudeclaw.service"
    layout = parse_unit([unit.read_text()], unit)
    assert layout is not None
    assert layout.user == "claudeclaw"
    assert layout.project == Path("/var/lib/claudeclaw")
    assert layout.home == Path("/var/lib/claudeclaw")
    assert layout.credentials["discord-token"] == Path("/etc/claudeclaw/discord-token")
    assert layout.credentials["anthropic-api-key"] == Path("/etc/claudeclaw/anthropic-api-key")
    assert layout.run_as("claudeclaw status") == "sudo -u claudeclaw claudeclaw status"
    # two users: claude runs as the agent, with the agent account's own HOME (doctor's login)
    assert layout.agent_user == "claudeclaw-agent" and layout.agent_home is None
    template = REPO / "systemd" / "claudeclaw@.service"
    instance = parse_unit([template.read_text().replace("%i", "work")], template)
    assert instance is not None and instance.agent_user == "claudeclaw-agent"
    assert instance.agent_home == Path("/var/lib/claudeclaw-agent/work")


def test_drop_ins_override_the_unit(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    etc = tmp_path / "etc"
    lib.mkdir()
    (etc / "claudeclaw.service.d").mkdir(parents=True)
    (lib / "claudeclaw.service").write_text((REPO / "systemd" / "claudeclaw.service").read_text())
    (etc / "claudeclaw.service.d" / "override.conf").write_text(
        "[Service]\nUser=bot\nExecStart=\nExecStart=/usr/bin/claudeclaw run --project /srv/p\n"
        "LoadCredential=\nLoadCredential=discord-token:/root/tok\n"
    )
    layout = find_service([etc, lib])
    assert layout is not None
    assert (layout.user, layout.project) == ("bot", Path("/srv/p"))
    assert dict(layout.credentials) == {"discord-token": Path("/root/tok")}
    assert find_service([tmp_path / "none"]) is None


def test_read_credential(tmp_path: Path) -> None:
    (tmp_path / "anthropic-api-key").write_text("  key-value\n")
    (tmp_path / "empty").write_text("\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert read_credential("anthropic-api-key", env) == "key-value"
    assert read_credential("empty", env) == ""
    assert read_credential("missing", env) == ""
    assert read_credential("anthropic-api-key", {}) == ""


def test_token_source_named_as_used() -> None:
    """Issue 12.9: the message names where the token came from, not every option."""
    layout = parse_unit(
        [(REPO / "systemd" / "claudeclaw.service").read_text()], Path("/lib/x.service")
    )
    text = token_source_text("credential", layout)
    assert "discord-token" in text and "/etc/claudeclaw/discord-token" in text
    assert "DISCORD_TOKEN" not in text
    assert token_source_text("env") == "the DISCORD_TOKEN environment variable"
    assert token_source_text("settings") == "discord.token in settings.json"


def _installed(root: Path) -> ServiceLayout:
    return ServiceLayout(Path("/lib/systemd/system/claudeclaw.service"), "claudeclaw", root, root)


def test_commands_find_the_installed_services_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.5: no --project and no project here: the installed service's project."""
    service_root = tmp_path / "var-lib-claudeclaw"
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("CLAUDECLAW_PROJECT", raising=False)
    monkeypatch.setattr(cli, "find_service", lambda: _installed(service_root))
    args = argparse.Namespace()
    assert cli._service_paths(args).root == service_root
    assert "installed service" in args.project_why

    monkeypatch.setenv("CLAUDECLAW_PROJECT", str(tmp_path / "from-env"))
    args = argparse.Namespace()
    assert cli._service_paths(args).root == tmp_path / "from-env"
    assert args.project_why == "$CLAUDECLAW_PROJECT"
    monkeypatch.delenv("CLAUDECLAW_PROJECT")

    ProjectPaths(elsewhere).state_dir.mkdir(parents=True)  # a project here wins
    args = argparse.Namespace()
    assert cli._service_paths(args).root == elsewhere
    args = argparse.Namespace(project=str(tmp_path / "given"))
    assert cli._service_paths(args).root == tmp_path / "given"


def test_not_running_names_the_project_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    service_root = tmp_path / "svc"
    ProjectPaths(service_root).state_dir.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLAUDECLAW_PROJECT", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(cli, "find_service", lambda: _installed(service_root))
    assert cli.main(["status"]) == 4
    err = capsys.readouterr().err
    assert str(service_root) in err and "installed service" in err


def test_permission_denied_is_reported_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.5: another user's daemon is not "not running"."""
    paths = ProjectPaths(tmp_path / "p")
    paths.state_dir.mkdir(parents=True)
    paths.daemon_file.write_text("{}")
    real = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self == paths.daemon_file:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(StateError, match="permission denied") as info:
        asyncio.run(control.request(paths, {"type": "ping"}))
    assert "sudo -u" in str(info.value) and str(paths.root) in str(info.value)
