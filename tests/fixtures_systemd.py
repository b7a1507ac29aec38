"""Fixtures for tests that need the .deb or a real systemd (tests/systemd/sdct.sh).

``claudeclaw_deb``: the package built by packaging/build-deb.sh, once per session (or the
file named by ``$CLAUDECLAW_TEST_DEB``). ``systemd_container``: a throw-away container
with systemd 252 as PID 1 on an overlay of this machine's root, the .deb installed,
``runner.claudePath`` pointing at tests/fake_claude.py and a test drop-in
(``CLAUDECLAW_TEST_HOOKS=1``). One container per session; it needs root and cgroup2.
Without them the tests skip, except under CI (``$CI`` set) where they fail: a CI job that
is meant to run them must not pass by skipping.

Debugging: ``CLAUDECLAW_SDCT_KEEP=1`` leaves the container's directory (its journal is
readable with ``journalctl -D <dir>/root/var/log/journal`` while it runs; see sdct.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SDCT = REPO / "tests" / "systemd" / "sdct.sh"
BUILD_DEB = REPO / "packaging" / "build-deb.sh"
FAKE_CLAUDE = REPO / "tests" / "fake_claude.py"

PROJECT = "/var/lib/claudeclaw"
SETTINGS = f"{PROJECT}/.claude/claudeclaw/settings.json"
UNIT = "claudeclaw.service"
FAKE_CLAUDE_IN_CT = "/opt/claudeclaw-test/fake-claude"
TEST_DROPIN = f"/etc/systemd/system/{UNIT}.d/10-test.conf"


def _unavailable(reason: str) -> None:
    """Skip, or fail under CI: there the systemd tests are expected to run."""
    if os.environ.get("CI"):
        pytest.fail(f"systemd tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def cgroup2_available() -> bool:
    return any(_fstype(p) == "cgroup2fs" for p in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"))


def _fstype(path: str) -> str:
    out = subprocess.run(["stat", "-fc", "%T", path], capture_output=True, text=True)
    return out.stdout.strip()


_built: list[Path] = []


@pytest.fixture(scope="session")
def claudeclaw_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb built from this tree (about 10-15 s: pip fetches cp311 wheels)."""
    given = os.environ.get("CLAUDECLAW_TEST_DEB")
    if given:
        return Path(given)
    if _built:  # several test modules import this fixture: build once per session
        return _built[0]
    if shutil.which("dpkg-deb") is None:
        _unavailable("dpkg-deb is not installed")
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [str(BUILD_DEB)],
        env=dict(os.environ, DIST=str(dist)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"build-deb.sh failed:\n{proc.stdout}\n{proc.stderr}"
    debs = sorted(dist.glob("claudeclaw_*.deb"))
    assert len(debs) == 1, list(dist.iterdir())
    _built.append(debs[0])
    return debs[0]


@dataclass
class Container:
    base: Path
    root: Path  # host path of the container's / (copy files in and out here)
    boot_ms: int

    def run(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(SDCT), "exec", str(self.base), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in container: {' '.join(args)} -> rc {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def sh(self, script: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("/bin/sh", "-c", script, **kwargs)

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``claudeclaw <args> --project /var/lib/claudeclaw`` as the service's user."""
        return self.run(
            "runuser", "-u", "claudeclaw", "--", "env", f"HOME={PROJECT}",
            "claudeclaw", *args, "--project", PROJECT,
            check=check, timeout=timeout,
        )  # fmt: skip

    def show(self, *props: str, unit: str = UNIT) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *matches: str, unit: str = UNIT) -> list[dict[str, Any]]:
        out = self.run("journalctl", "-u", unit, "-o", "json", "--no-pager", *matches).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def settings(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Edit settings.json in place (as the service user, so ownership stays)."""
        path = self.root / SETTINGS.lstrip("/")
        data = json.loads(path.read_text())
        change(data)
        text = json.dumps(data, indent=2)
        self.run(
            "runuser", "-u", "claudeclaw", "--", "python3", "-c",
            "import sys; open(sys.argv[1], 'w').write(sys.stdin.read())", SETTINGS,
            input=text,
        )  # fmt: skip

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> float:
        """Poll ``predicate`` every 0.1 s; returns the seconds it took."""
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.1)
        return time.monotonic() - start

    def unit_pids(self, unit: str = UNIT) -> dict[int, str]:
        """The unit's processes (pids as the container sees them) and their command lines."""
        script = (
            f"cat /sys/fs/cgroup/system.slice/{unit}/cgroup.procs 2>/dev/null | "
            "while read -r p; do printf '%s ' \"$p\"; "
            "tr '\\0' ' ' </proc/\"$p\"/cmdline 2>/dev/null; echo; done"
        )
        out = self.sh(script).stdout
        pids: dict[int, str] = {}
        for line in out.splitlines():
            pid, _, cmdline = line.partition(" ")
            if pid.isdigit():
                pids[int(pid)] = cmdline.strip()
        return pids

    def alive(self, pids: list[int]) -> list[int]:
        """Those of ``pids`` (container pids) that still exist inside the container."""
        if not pids:
            return []
        script = " ".join(f"[ -d /proc/{p} ] && echo {p};" for p in pids)
        out = self.sh(script + " true").stdout
        return [int(p) for p in out.split()]


TEST_DROPIN_TEXT = """\
# claudeclaw e2e tests: the test hooks (claudeclaw debug hang) and a quick restart.
[Service]
Environment=CLAUDECLAW_TEST_HOOKS=1
RestartSec=500ms
"""


def boot_container(base: Path, env: dict[str, str] | None = None) -> Container:
    """Boot a container in ``base`` (keep the path short: cgroup and socket names derive
    from it); skip, or fail under CI, where none can run. ``env``: for sdct.sh."""
    if os.geteuid() != 0:
        _unavailable("the systemd container needs root (unshare, cgroups, mounts)")
    if not cgroup2_available():
        _unavailable("no cgroup2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified)")
    for tool in ("unshare", "nsenter", "setpriv", "pivot_root"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} (util-linux) is not installed")
    start = time.monotonic()
    boot = subprocess.run(
        [str(SDCT), "boot", str(base)], capture_output=True, text=True, timeout=120, env=env
    )
    boot_ms = int((time.monotonic() - start) * 1000)
    if boot.returncode != 0:
        subprocess.run([str(SDCT), "stop", str(base)], capture_output=True, timeout=120)
        _unavailable(f"the systemd container did not boot: {boot.stderr[-800:]}")
    root = Path(subprocess.check_output([str(SDCT), "root", str(base)], text=True).strip())
    return Container(base=base, root=root, boot_ms=boot_ms)


def stop_container(base: Path) -> None:
    """Stop it; ``CLAUDECLAW_SDCT_KEEP=1`` keeps its directory for a look."""
    env = dict(os.environ)
    if os.environ.get("CLAUDECLAW_SDCT_KEEP"):
        env["SDCT_KEEP"] = "1"
    subprocess.run([str(SDCT), "stop", str(base)], capture_output=True, timeout=120, env=env)


@pytest.fixture(scope="session")
def systemd_container(
    tmp_path_factory: pytest.TempPathFactory, claudeclaw_deb: Path
) -> Iterator[Container]:
    """A booted container with the package installed and configured for the fake claude."""
    base = Path(tmp_path_factory.mktemp("sdct")) / "ct"
    ct = boot_container(base)
    try:
        shutil.copy(claudeclaw_deb, ct.root / "tmp" / claudeclaw_deb.name)
        ct.run("dpkg", "-i", f"/tmp/{claudeclaw_deb.name}", timeout=120)
        fake = FAKE_CLAUDE.read_text().split("\n", 1)[1]
        ct.write(FAKE_CLAUDE_IN_CT, "#!/usr/bin/python3\n" + fake, mode=0o755)

        def configure(data: dict[str, Any]) -> None:
            data.setdefault("runner", {})["claudePath"] = FAKE_CLAUDE_IN_CT
            limits = data.setdefault("limits", {})
            limits["shutdownGraceSeconds"] = 3
            limits["maxConcurrentRuns"] = 2

        ct.settings(configure)
        ct.write(TEST_DROPIN, TEST_DROPIN_TEXT)
        ct.run("systemctl", "daemon-reload")
        yield ct
    finally:
        stop_container(base)
