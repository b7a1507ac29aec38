"""Architecture rules that must not erode: who may import what, and private runtime files."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys

import pytest

from claudeclaw.supervisor import Supervisor


def imported_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


async def run_as_nobody(probe: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet as uid/gid 65534 (needs root)."""
    return await asyncio.to_thread(
        subprocess.run,
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-S", "-c", probe, *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize("module", ["claudeclaw.worker", "claudeclaw.forkserver"])
def test_workers_never_import_discord(module: str) -> None:
    modules = imported_after(f"import {module}")
    assert not {m for m in modules if m == "discord" or m.startswith("discord.")}
    assert "claudeclaw.frontend" not in modules and "claudeclaw.supervisor" not in modules


def test_the_supervisor_has_no_claude_logic() -> None:
    modules = imported_after("import claudeclaw.supervisor")
    assert not {m for m in modules if m.startswith("claudeclaw.claude")}


async def test_runtime_sockets_and_state_are_private(daemon: Supervisor) -> None:
    """Runtime dir 0700, sockets 0600, state dir 0700, session files 0600; and another
    user cannot reach the control socket at all."""
    assert daemon.pool is not None and daemon.control is not None
    runtime = daemon.pool.socket_path.parent
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
    for sock in (daemon.pool.socket_path, daemon.control.path):
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.paths.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(daemon.paths.daemon_file.stat().st_mode) == 0o600
    if os.getuid() != 0:
        pytest.skip("needs root to try another uid")
    probe = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        "try:\n s.connect(sys.argv[1]); print('connected')\n"
        "except PermissionError: print('denied')\n"
    )
    out = await run_as_nobody(probe, str(daemon.control.path))
    assert out.stdout.strip() == "denied", out.stderr


async def test_control_socket_checks_the_peer_uid(daemon: Supervisor) -> None:
    """Even if someone loosens the permissions, a peer with another uid is refused."""
    if os.getuid() != 0:
        pytest.skip("needs root to try another uid")
    assert daemon.control is not None
    runtime = daemon.control.path.parent
    runtime.chmod(0o755)
    daemon.control.path.chmod(0o666)
    probe = (
        "import socket,sys,json,struct\n"
        "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "body=json.dumps({'v':1,'type':'status'}).encode()\n"
        "try:\n s.sendall(struct.pack('>I',len(body))+body)\n"
        "except BrokenPipeError:\n pass  # refused before it read anything: fine\n"
        "n=struct.unpack('>I',s.recv(4))[0]; print(s.recv(n).decode())\n"
    )
    try:
        out = await run_as_nobody(probe, str(daemon.control.path))
    finally:
        runtime.chmod(0o700)
    assert '"permission denied"' in out.stdout, out.stderr


async def test_workers_run_the_same_code_as_their_supervisor(daemon: Supervisor) -> None:
    """Whatever else is installed, the fork server and its workers import claudeclaw from
    where the supervisor did (first on their PYTHONPATH); claude itself never sees it."""
    import psutil

    from claudeclaw.model import SessionKey
    from claudeclaw.workerenv import PACKAGE_ROOT
    from tests.fixtures_daemon import collect

    events = await collect(daemon, SessionKey("123"), "ECHO_ENV")
    assert daemon.pool is not None
    handle = daemon.pool.find(SessionKey("123"))
    assert handle is not None
    worker_env = psutil.Process(handle.pid).environ()
    assert worker_env["PYTHONPATH"].split(os.pathsep)[0] == PACKAGE_ROOT
    claude_env = json.loads(events[-1].reply)  # type: ignore[union-attr]
    assert "PYTHONPATH" not in claude_env
