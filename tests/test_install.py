"""The README's first command, as a user runs it: ``sudo packaging/install.sh``.

In a fresh throw-away systemd container (tests/systemd/sdct.sh), with a copy of this source
tree: the script installs the pinned Claude CLI, builds and installs the .deb, and starts
the service. Result: the service is active after READY=1, serving local-only, and
``claudeclaw doctor`` (as the service user) finds the CLI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures_systemd import REPO, SDCT, _unavailable, cgroup2_available

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [line for line in out.stdout.splitlines() if line and (REPO / line).is_file()]


Runner = Callable[..., subprocess.CompletedProcess[str]]


@contextlib.contextmanager
def fresh_container(base: Path) -> Iterator[tuple[Path, Runner]]:
    """A booted throw-away container with a copy of this source tree in /opt/claudeclaw-src;
    yields (its root on the host, a function running a command inside)."""
    if os.geteuid() != 0:
        _unavailable("the systemd container needs root")
    if not cgroup2_available():
        _unavailable("no cgroup2 hierarchy")
    boot = subprocess.run([str(SDCT), "boot", str(base)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    if boot.returncode != 0:
        subprocess.run([str(SDCT), "stop", str(base)], capture_output=True, timeout=120)
        _unavailable(f"the systemd container did not boot: {boot.stderr[-800:]}")

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SDCT), "exec", str(base), *args], capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip

    try:
        root = Path(subprocess.check_output([str(SDCT), "root", str(base)], text=True).strip())
        src = root / "opt" / "claudeclaw-src"
        for name in _tracked_files():
            target = src / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target)
        yield root, run
    finally:
        subprocess.run([str(SDCT), "stop", str(base)], capture_output=True, timeout=120)


def test_readme_test_command_sets_up_with_debians_python(tmp_path: Path) -> None:
    """Issue 12.1: ``./tests/run.sh`` on a stock Debian 12, whose /usr/bin/python3 is
    externally managed (PEP 668) and may lack python3-venv: it installs python3-venv (as
    root), creates .venv from Debian's python3 and installs the test dependencies there."""
    with fresh_container(tmp_path / "ct") as (root, run):
        marker = run(
            "/usr/bin/python3",
            "-c",
            "import sysconfig, os; print(os.path.exists("
            "os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))",
        )
        assert marker.stdout.strip() == "True", "Debian's python3 should be externally managed"
        assert run("sh", "-c", "command -v python3").stdout.strip() == "/usr/bin/python3"
        # a stock Debian 12 has no python3-venv (no ensurepip)
        gone = run("dpkg", "--purge", "--force-depends", "python3-venv", "python3.11-venv")
        assert gone.returncode == 0, gone.stderr
        assert run("python3", "-c", "import ensurepip").returncode != 0

        setup = run("env", "HOME=/root", "CLAUDECLAW_SETUP_ONLY=1",
                    "/opt/claudeclaw-src/tests/run.sh", timeout=540)  # fmt: skip
        out = setup.stdout + setup.stderr
        assert setup.returncode == 0, out[-4000:]
        assert "installing Debian packages: python3-venv" in out
        assert "externally-managed-environment" not in out
        venv_python = "/opt/claudeclaw-src/.venv/bin/python"
        cfg = (root / "opt/claudeclaw-src/.venv/pyvenv.cfg").read_text()
        assert "home = /usr/bin" in cfg, cfg
        check = run(venv_python, "-c", "import claudeclaw, discord, pytest, ruff, mypy; "
                    "import sys; print(sys.base_prefix)")  # fmt: skip
        assert check.returncode == 0 and check.stdout.strip() == "/usr", check.stderr
        # the suite itself runs on it
        quick = run("sh", "-c", f"cd /opt/claudeclaw-src && {venv_python} -m pytest -q "
                    "-p no:cacheprovider tests/test_routing.py", timeout=240)  # fmt: skip
        assert quick.returncode == 0, quick.stdout[-2000:] + quick.stderr[-2000:]
        # a second run reuses the environment
        again = run("env", "HOME=/root", "CLAUDECLAW_SETUP_ONLY=1",
                    "/opt/claudeclaw-src/tests/run.sh", timeout=300)  # fmt: skip
        assert again.returncode == 0, again.stderr[-2000:]
        assert "creating the virtual environment" not in again.stdout


def test_install_script_installs_and_starts_the_service(tmp_path: Path) -> None:
    with fresh_container(tmp_path / "ct") as (_root, run):
        assert run("systemctl", "is-active", "claudeclaw").stdout.strip() != "active"

        done = run("/opt/claudeclaw-src/packaging/install.sh", timeout=540)
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "claudeclaw is installed" in done.stdout
        # two users: the login step is the agent's, in its home (never the daemon's user)
        home = "/var/lib/claudeclaw-agent"
        login = f"cd {home} && sudo -u claudeclaw-agent env HOME={home} claude"
        assert login in done.stdout, done.stdout
        assert "sudo -u claudeclaw env HOME" not in done.stdout

        show = run("systemctl", "show", "claudeclaw", "-p", "ActiveState,SubState,StatusText")
        props = dict(line.split("=", 1) for line in show.stdout.splitlines() if "=" in line)
        assert props["ActiveState"] == "active" and props["SubState"] == "running"
        assert "local only" in props["StatusText"]
        assert run("claude", "--version").stdout.startswith("2.1.330 ")
        doctor = run("runuser", "-u", "claudeclaw", "--", "env", "HOME=/var/lib/claudeclaw",
                     "claudeclaw", "doctor", "--project", "/var/lib/claudeclaw")  # fmt: skip
        assert "2.1.330" in doctor.stdout, doctor.stdout + doctor.stderr
        # by hand, without the unit's environment: the running daemon's two users count
        assert "two users: claude runs as claudeclaw-agent" in doctor.stdout, doctor.stdout
        # and claude's login is looked for where the agent keeps it, with the fix above
        assert (
            "not logged in for claudeclaw-agent: no /var/lib/claudeclaw-agent/.claude/"
            in doctor.stdout
        )
        assert f"fix: {login}, type /login" in doctor.stdout, doctor.stdout
        # again: an upgrade in place keeps the settings and restarts the service
        again = run("/opt/claudeclaw-src/packaging/install.sh", timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
        assert run("systemctl", "is-active", "claudeclaw").stdout.strip() == "active"
