"""The README's first command, as a user runs it: ``sudo packaging/install.sh``.

In a fresh throw-away systemd container (tests/systemd/sdct.sh), with a copy of this source
tree: the script installs the pinned Claude CLI, builds and installs the .deb, and starts
the service. Result: the service is active after READY=1, serving local-only, and
``claudeclaw doctor`` (as the service user) finds the CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
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


def test_install_script_installs_and_starts_the_service(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        _unavailable("the systemd container needs root")
    if not cgroup2_available():
        _unavailable("no cgroup2 hierarchy")
    base = tmp_path / "ct"
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
        assert run("systemctl", "is-active", "claudeclaw").stdout.strip() != "active"

        done = run("/opt/claudeclaw-src/packaging/install.sh", timeout=540)
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "claudeclaw is installed" in done.stdout

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
        # again: an upgrade in place keeps the settings and restarts the service
        again = run("/opt/claudeclaw-src/packaging/install.sh", timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
        assert run("systemctl", "is-active", "claudeclaw").stdout.strip() == "active"
    finally:
        subprocess.run([str(SDCT), "stop", str(base)], capture_output=True, timeout=120)
