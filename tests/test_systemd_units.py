"""The unit files (systemd-analyze verify/security, offline) and the .deb's metadata.

``systemd-analyze verify`` exits 0 even when it ignores a bad setting, so the checks
assert that it printed nothing on stderr. The units name /usr/bin/claudeclaw, which
exists only once the package is installed; here a copy of each unit points at a stub.
(The e2e tests verify the installed units unchanged inside the systemd container.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures_systemd import REPO, claudeclaw_deb  # noqa: F401 - fixture

UNITS = REPO / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _staged(tmp_path: Path, source: Path, name: str) -> Path:
    stub = tmp_path / "claudeclaw"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = source.read_text().replace("/usr/bin/claudeclaw", str(stub))
    target = tmp_path / name
    target.write_text(text)
    return target


def _analyze(tmp_path: Path, *args: str, user: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SYSTEMD_LOG_COLOR="0")
    if user:
        runtime = tmp_path / "xdg"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        args = ("--user", *args)
    return subprocess.run(
        [str(ANALYZE), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )


@needs_analyze
@pytest.mark.parametrize(
    ("source", "name", "user"),
    [
        ("claudeclaw.service", "claudeclaw.service", False),
        ("claudeclaw@.service", "claudeclaw@demo.service", False),
        ("user/claudeclaw.service", "claudeclaw.service", True),
    ],
)
def test_units_verify_without_any_message(
    tmp_path: Path, source: str, name: str, user: bool
) -> None:
    unit = _staged(tmp_path, UNITS / source, name)
    proc = _analyze(tmp_path, "verify", str(unit), user=user)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@needs_analyze
def test_verify_would_catch_a_bad_setting(tmp_path: Path) -> None:
    """The check above is meaningful: a typo produces stderr output (but exit code 0)."""
    unit = _staged(tmp_path, UNITS / "claudeclaw.service", "claudeclaw.service")
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=bogus"))
    proc = _analyze(tmp_path, "verify", str(unit))
    assert "kill mode" in proc.stderr.lower()


@needs_analyze
@pytest.mark.parametrize("name", ["claudeclaw.service", "claudeclaw@demo.service"])
def test_security_exposure_is_low(tmp_path: Path, name: str) -> None:
    source = "claudeclaw.service" if "@" not in name else "claudeclaw@.service"
    unit = _staged(tmp_path, UNITS / source, name)
    proc = _analyze(tmp_path, "security", "--offline=yes", "--no-pager", str(unit))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout[-500:] + proc.stderr
    assert float(match.group(1)) <= 2.0, match.group(0)


def _settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_system_unit_contract() -> None:
    s = _settings(UNITS / "claudeclaw.service")
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30s",
        "Restart": "on-failure",
        "RestartSec": "2s",
        "KillMode": "mixed",
        "TimeoutStopSec": "45s",
        "User": "claudeclaw",
        "Group": "claudeclaw",
        "StateDirectory": "claudeclaw",
        "StateDirectoryMode": "0700",
        "RuntimeDirectory": "claudeclaw",
        "RuntimeDirectoryMode": "0700",
        "WorkingDirectory": "/var/lib/claudeclaw",
        "SetCredential": "anthropic-api-key:\\n",  # the API key file is optional
        "SyslogIdentifier": "claudeclaw",
        "ExecStart": "/usr/bin/claudeclaw run --project /var/lib/claudeclaw",
        "ExecReload": "/usr/bin/claudeclaw reload --project /var/lib/claudeclaw",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/claudeclaw /var/lib/claudeclaw-agent",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        # two users: claude runs as claudeclaw-agent; the daemon may only switch to it and
        # stop its runs (agent.py); NoNewPrivileges stays on
        "CapabilityBoundingSet": "CAP_SETUID CAP_SETGID CAP_KILL",
        "AmbientCapabilities": "CAP_SETUID CAP_SETGID CAP_KILL",
        "NoNewPrivileges": "yes",
        "ProtectProc": "invisible",
    }
    for key, value in expected.items():
        assert s.get(key) == [value], (key, s.get(key))
    assert s["LoadCredential"] == [
        "discord-token:/etc/claudeclaw/discord-token",
        "anthropic-api-key:/etc/claudeclaw/anthropic-api-key",
    ]
    assert not any("ANTHROPIC" in e for e in s["Environment"])  # systemctl show prints those
    assert {
        "HOME=/var/lib/claudeclaw",
        "PYTHONUNBUFFERED=1",
        "CLAUDECLAW_AGENT_USER=claudeclaw-agent",
    } <= set(s["Environment"])
    assert "MemoryDenyWriteExecute" not in s  # the claude CLI JIT-compiles
    unit_section = (UNITS / "claudeclaw.service").read_text().split("[Service]")[0]
    assert "StartLimitIntervalSec=" in unit_section and "StartLimitBurst=" in unit_section
    # TimeoutStopSec must leave room for the daemon's own grace (limits.shutdownGraceSeconds)
    from claudeclaw.config import LimitSettings

    assert LimitSettings().shutdown_grace_seconds + 10 <= 45


def test_template_is_per_project() -> None:
    s = _settings(UNITS / "claudeclaw@.service")
    assert s["ExecStart"] == ["/usr/bin/claudeclaw run --project /var/lib/claudeclaw/%i"]
    assert s["RuntimeDirectory"] == ["claudeclaw/%i"]
    assert s["StateDirectory"] == ["claudeclaw/%i"]
    assert s["LoadCredential"] == [
        "discord-token:/etc/claudeclaw/%i/discord-token",
        "anthropic-api-key:/etc/claudeclaw/%i/anthropic-api-key",
    ]
    assert s["SetCredential"] == ["anthropic-api-key:\\n"]
    assert "HOME=/var/lib/claudeclaw/%i" in s["Environment"]


def test_user_unit_needs_no_privileges() -> None:
    s = _settings(UNITS / "user" / "claudeclaw.service")
    for privileged in ("User", "Group", "ProtectSystem", "PrivateDevices", "CapabilityBoundingSet"):
        assert privileged not in s, privileged
    assert "CLAUDECLAW_PROJECT=%h/claudeclaw" in s["Environment"]
    assert s["WantedBy"] == ["default.target"]


# --------------------------------------------------------------------------- the .deb


def _dpkg(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


def test_deb_metadata_and_contents(claudeclaw_deb: Path) -> None:  # noqa: F811
    assert re.fullmatch(r"claudeclaw_\d+\.\d+\.\d+[^_]*_(amd64|arm64)\.deb", claudeclaw_deb.name)
    info = _dpkg("--info", str(claudeclaw_deb))
    assert "Package: claudeclaw" in info
    assert re.search(r"Depends: .*python3 \(>= 3\.11\)", info)
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"\d+ bytes,\s+\d+ lines\s+\*\s+{script}", info), script
    listing = _dpkg("--contents", str(claudeclaw_deb))
    rows = [line.split() for line in listing.splitlines()]
    files = {row[-1].lstrip("."): row for row in rows}
    for path in (
        "/usr/bin/claudeclaw",
        "/lib/systemd/system/claudeclaw.service",
        "/lib/systemd/system/claudeclaw@.service",
        "/usr/lib/systemd/user/claudeclaw.service",
        "/opt/claudeclaw/lib/claudeclaw/cli.py",
        "/opt/claudeclaw/lib/claudeclaw/notify.py",
        "/opt/claudeclaw/lib/structlog/__init__.py",
        "/opt/claudeclaw/lib/discord/__init__.py",
    ):
        assert path in files, path
    assert all(row[1] == "root/root" for row in rows), "files must be owned by root"
    assert files["/usr/bin/claudeclaw"][0] == "-rwxr-xr-x"
    # user data is never shipped: settings, tokens and state are created by postinst/init
    assert not [p for p in files if p.startswith(("/etc/", "/var/"))]
    assert not [p for p in files if "settings.json" in p or "__pycache__" in p]
    # compiled dependencies are for Debian 12's CPython 3.11
    so = [p for p in files if p.endswith(".so")]
    assert so and all("cpython-311" in p or "abi3" in p for p in so), so


def test_deb_wrapper_is_isolated(claudeclaw_deb: Path, tmp_path: Path) -> None:  # noqa: F811
    subprocess.run(["dpkg-deb", "-x", str(claudeclaw_deb), str(tmp_path)], check=True)
    wrapper = (tmp_path / "usr/bin/claudeclaw").read_text()
    assert wrapper.startswith("#!/bin/sh\n")
    assert "exec /usr/bin/python3 -I /opt/claudeclaw/bin/claudeclaw" in wrapper
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(claudeclaw_deb), str(control)], check=True)
    for script in ("postinst", "prerm", "postrm"):
        assert subprocess.run(["sh", "-n", str(control / script)]).returncode == 0
    postinst = (control / "postinst").read_text()
    assert 'if [ ! -e "$SETTINGS" ]' in postinst  # settings.json is never overwritten
    assert "rm -rf /var/lib/claudeclaw" in (control / "postrm").read_text().split("purge)")[1]
    assert "rm -rf" not in (control / "postrm").read_text().split("purge)")[0]
    # the bundled library imports with Debian's python3 (as /usr/bin/claudeclaw runs it)
    if Path("/usr/bin/python3").exists():
        lib = tmp_path / "opt/claudeclaw/lib"
        probe = (
            f"import sys; sys.path.insert(0, {str(lib)!r}); import claudeclaw.cli, structlog, "
            "aiohttp, psutil, discord; print(claudeclaw.__file__)"
        )
        out = subprocess.run(
            ["/usr/bin/python3", "-I", "-c", probe], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(str(lib))
