"""psutil views of claudeclaw's processes: live stats, and the sweep for orphans.

Every worker (and, through inheritance, every ``claude`` and tool process it starts) carries
``CLAUDECLAW_OWNER=<project tag>:<supervisor pid>:<supervisor start time>`` in its
environment. A process whose tag names this project but whose supervisor is no longer
alive (pid gone, or reused by a process with another start time) is an orphan of a daemon
that died; the next daemon ends it at start. Identity is always pid + create time, so a
reused pid is never signalled.
"""

from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import dataclass

import psutil

OWNER_ENV = "CLAUDECLAW_OWNER"


def project_tag(root: str) -> str:
    """Short, stable tag of a project root (what the environment tag starts with)."""
    return hashlib.sha256(root.encode()).hexdigest()[:16]


def owner_value(tag: str) -> str:
    """The value this supervisor puts into its children's ``CLAUDECLAW_OWNER``."""
    me = psutil.Process()
    return f"{tag}:{me.pid}:{me.create_time():.3f}"


def _owner_alive(pid: int, create_time: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - create_time) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def find_orphans(tag: str) -> list[psutil.Process]:
    """Processes of ours tagged with ``tag`` whose supervisor is gone (blocking: /proc scan)."""
    uid = os.getuid()
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            if proc.pid == os.getpid():
                continue
            value = proc.environ().get(OWNER_ENV, "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        parts = value.split(":")
        if len(parts) != 3 or parts[0] != tag:
            continue
        try:
            owner_pid, owner_ctime = int(parts[1]), float(parts[2])
        except ValueError:
            continue
        if not _owner_alive(owner_pid, owner_ctime):
            found.append(proc)
    return found


def end_processes(procs: list[psutil.Process], grace: float = 3.0) -> list[int]:
    """TERM, wait up to ``grace`` s, then KILL; returns the pids that were ended (blocking)."""
    for proc in procs:
        try:
            proc.terminate()
            proc.resume()  # a stopped one (a frozen warm claude) acts on SIGTERM only then
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in procs]


def sweep_orphans(tag: str) -> list[int]:
    """Find and end the orphans of a dead supervisor of this project (blocking)."""
    return end_processes(find_orphans(tag))


def stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` from the third on (state, ppid, pgrp, …: field
    N is item N-3); None if there is no such process. The command name before them may
    hold spaces and parentheses, so they are counted from after its last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22); None if there is no such
    process. One small read: psutil's ``create_time`` builds a Process and reads
    ``/proc/stat`` for the boot time as well, twice per message here."""
    fields = stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process as pid + start time: safe to signal later, never a reused pid."""

    pid: int
    started: int  # clock ticks since boot

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        started = start_ticks(pid)
        return None if started is None else cls(pid, started)

    def alive(self) -> bool:
        return start_ticks(self.pid) == self.started

    def kill_group(self, sig: int = signal.SIGKILL) -> bool:
        """Signal the process group this process leads, if it is still the same process."""
        if not self.alive():
            return False
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True


class StatsCache:
    """RSS and CPU% per pid; keeps psutil handles so cpu_percent measures between calls."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pid: int) -> tuple[int, float]:
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                return proc.memory_info().rss, proc.cpu_percent(None)
        except psutil.Error:
            self._procs.pop(pid, None)
            return 0, 0.0

    def forget_missing(self, live: set[int]) -> None:
        for pid in list(self._procs):
            if pid not in live:
                del self._procs[pid]
