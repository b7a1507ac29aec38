#!/usr/bin/env python3
"""Our own work per Discord message, beside ``claude``; and what idle threads cost.

    python bench/message.py [--messages N] [--threads N] [--skip-idle]
    python bench/message.py --against DIR [--pairs N] [--messages N]
    python bench/message.py --original DIR [--bun PATH] [--text short|long] [--pairs N]

A real daemon process (``tests/daemon_on_fake.py``: ``claudeclaw run`` with the real
discord.py client, the real supervisor, fork server and worker processes) against the
loopback fake Discord of this process, with the fake ``claude`` (tests/fake_claude.py) in
its duplex (warm) mode answering at once. Warm sessions on (the default).

* **ours per message, wall** = (Discord MESSAGE_CREATE dispatched → the fake ``claude`` has
  read the prompt) + (``claude`` about to write its ``result`` → the reply's POST reaches
  the fake Discord). The fake stamps both ends (``FAKE_CLAUDE_TIMES``); this process stamps
  the others; all with ``time.time()``. For a *new thread* the first part includes starting
  ``claude`` itself, which is not ours: the time from spawning the fake directly (same argv
  shape, ``initialize`` answered, then the prompt) to its reading the prompt, measured just
  before each sample, is subtracted from it, when that ``claude`` was started on the
  message's path (not when the spare had started it ahead: ``runner.prestartClaude``).
* **ours per message, CPU** = CPU of the daemon's processes (supervisor, fork server,
  workers, also those forked and retired during the batch; not ``claude``, not this
  process; from ``schedstat``, see :class:`CpuMeter`) over a batch of 10 messages, divided
  by its size: the median batch (:func:`cpu_per_message`). It includes everything a
  message causes after its reply too (reactions, state writes).
* **of it from message in to reply posted** = the same CPU over the issue's window only:
  read from every daemon process as the message is dispatched and again as the fake
  Discord receives the reply's POST (before answering it); the median message. It leaves
  out what comes before the message and after its reply (✅ and removing ⚙️, the ledger's
  "delivered", the pool making its next spare and starting its ``claude`` ahead, freezing
  an idle ``claude``); a new thread's join starts at its THREAD_CREATE, sent just before
  the message as Discord does, and may overlap it (~0.6 ms when it does).
* **idle cost**: ``--threads`` threads each get one message within a few seconds, then the
  PSS of our processes is summed (psutil ``memory_full_info``), once with the idle warm
  ``claude`` processes counted and once without. "Our processes" = supervisor + fork server
  + workers; the ``claude`` processes are Claude Code's, reported in their own column (the
  real CLI idles at ~200 MB RSS each, the fake at ~10 MB).

* **--against DIR**: the per-message figures of another checkout's ``claudeclaw`` (e.g. a
  ``git worktree`` of the commit a target was set on) and of this tree's, ``--pairs`` runs
  each, interleaved, and the median of the pairs' ratios. The bench, the fakes and the
  daemon's launcher stay this tree's; the fake stamps a cold ``claude -p`` run too (it has
  the prompt once its arguments are read), so code that starts ``claude`` per message can
  be measured: its resume's wall time then includes that start.

* **--original DIR**: the same figures of the original ClaudeClaw (TypeScript on Bun),
  side by side with this tree's, interleaved the same way, on the same fake Discord with the
  same fake ``claude``: DIR is a checkout of ``moazbuilds/claudeclaw`` with its packages
  installed (``git clone https://github.com/moazbuilds/claudeclaw DIR && cd DIR && bun
  install``; Bun itself from npm: ``npm install bun``, then ``--bun
  node_modules/.bin/bun``). See :class:`OriginalRig` for the two addresses it changes in
  a copy. Its work is its one process; it starts ``claude`` cold for every message, so
  the time of that start (measured beside each sample) is taken off its resumes too.
  ``--text long`` (the default here) sends messages of 200+ characters, so the
  original's thread classifier (a second, synchronous ``claude`` run per shorter guild
  message) stays out of its figures; ``--text short`` leaves it in, as most messages
  meet it.

``BENCH_LOG_MODE=journal`` runs the daemon in the log mode of a systemd service
(journald's native protocol, to a socket of the bench's that drops the entries) instead of
JSON lines to a file; ``BENCH_LOG_LEVEL`` sets its level (default info).

Figures are medians; the machine is shared and noisy: compare ratios within one run.
Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord.gateway
import discord.http
import psutil
import yarl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from claudeclaw import control  # noqa: E402
from claudeclaw.paths import ProjectPaths  # noqa: E402
from claudeclaw.procs import stat_fields  # noqa: E402
from tests.fake_discord import FakeDiscord  # noqa: E402

MB = 1024 * 1024


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


class StampedDiscord(FakeDiscord):
    """The fake Discord, noting when each of the bot's message POSTs arrives, and the
    daemon's CPU at that moment (``cpu_now``, set by the rig), before answering it."""

    def __init__(self) -> None:
        super().__init__()
        # (time, channel, content, our CPU per process then)
        self.posted: list[tuple[float, str, str, dict[int, float]]] = []
        self.cpu_now: Callable[[], dict[int, float]] = dict

    async def _post_message(self, body: Any, channel_id: str) -> Any:
        cpu = self.cpu_now()
        content = str((body or {}).get("content") or "")
        self.posted.append((time.time(), channel_id, content, cpu))
        return await super()._post_message(body, channel_id)


def is_claude(proc: psutil.Process) -> bool:
    try:
        return any("fake_claude" in part for part in proc.cmdline())
    except psutil.Error:
        return False


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` so far, all its threads, to the nanosecond (``schedstat``; the
    user/system times in ``/proc/<pid>/stat`` are whole 10 ms ticks, rounded down, which
    undercounts a short-lived worker by ~10 ms)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
            total += int(fh.read().split()[0])
    return total / 1e9


def reaped_children_cpu(pid: int) -> float:
    """CPU of the children ``pid`` has reaped so far (cutime + cstime: whole ticks)."""
    fields = stat_fields(pid)
    if fields is None:
        raise ProcessLookupError(pid)  # (an OSError: the caller's "it exited meanwhile")
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def daemon_tree(root: int) -> list[tuple[int, int]]:
    """(pid, depth) of every process under the daemon's, from
    ``/proc/<pid>/task/*/children`` (a few tiny reads; psutil's ``children()`` scans all of
    /proc, which at 50 reads a second would take a core from the daemon it measures).
    Depth 0 is the supervisor, 1 its fork server, 2 the workers: ours; below a worker
    everything is Claude's (``claude`` and its tools)."""
    found: list[tuple[int, int]] = []
    todo = [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        found.append((pid, depth))
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    todo += [(int(kid), depth + 1) for kid in fh.read().split()]
        except OSError:  # it exited meanwhile
            pass
    return found


def our_cpu_now(root: int, ours: int = 2) -> dict[int, float]:
    """CPU so far of each of the daemon's own processes (see :func:`daemon_tree`): those
    down to depth ``ours`` (2 for claudeclaw; 0 for the original, whose children are
    ``claude`` runs)."""
    cpu: dict[int, float] = {}
    for pid, depth in daemon_tree(root):
        if depth <= ours:
            with contextlib.suppress(OSError):
                cpu[pid] = cpu_seconds(pid)
    return cpu


def window_cpu(before: dict[int, float], after: dict[int, float]) -> float:
    """Our CPU between two :func:`our_cpu_now` readings (a worker forked in between counts
    whole; one that exited in between is missed, which the steady state never does)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


class CpuMeter:
    """CPU of the daemon's own processes over a window, including workers forked and
    retired inside it: each process's CPU is read every 20 ms while it lives, and what it
    spent after its last reading (its exit) is found in the fork server's reaped-children
    time, less what that holds of Claude's: a worker's own reaped children (its ``claude``
    processes, ~30 ms of CPU each) come with it, so their time as read last is taken off.
    What a closed ``claude`` spent after its last reading stays in: the figure errs high."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.start: dict[int, float] = {}
        # pid -> (is ours, CPU read last, its reaped children's CPU read last)
        self.last: dict[int, tuple[bool, float, float]] = {}
        self.forkserver: psutil.Process | None = None
        self.reaped0 = 0.0
        self._task: asyncio.Task[None] | None = None

    def _read(self) -> None:
        """Every process under the daemon (:func:`daemon_tree`), ours or Claude's."""
        assert self.rig.proc is not None
        for pid, depth in daemon_tree(self.rig.proc.pid):
            try:
                kids = reaped_children_cpu(pid) if depth == 2 else 0.0
                self.last[pid] = (depth <= self.rig.our_depth, cpu_seconds(pid), kids)
            except OSError:  # it exited meanwhile
                pass

    def _reaped(self) -> float:
        if self.forkserver is None:  # (the original: what it reaps is claude's)
            return 0.0
        times = self.forkserver.cpu_times()
        return float(times.children_user + times.children_system)

    async def __aenter__(self) -> CpuMeter:
        self.forkserver = self.rig.forkserver()
        self._read()
        self.start = {pid: cpu for pid, (_, cpu, _) in self.last.items()}
        self.reaped0 = self._reaped()
        self._task = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            self._read()

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.last, before = {}, self.last
        self._read()
        alive = set(self.last)
        self.last = {**before, **self.last}
        ours = sum(
            cpu - self.start.get(pid, 0.0) for pid, (mine, cpu, _) in self.last.items() if mine
        )
        gone = sum(cpu + kids for pid, (_, cpu, kids) in self.last.items() if pid not in alive)
        self.unseen = max(0.0, self._reaped() - self.reaped0 - gone)
        self.ours = ours + self.unseen


class Rig:
    """A daemon on the fake Discord. ``code``: the tree whose ``claudeclaw`` it runs (this
    one, or another checkout for ``--against``); the bench, the fakes and
    ``tests/daemon_on_fake.py`` are always this tree's."""

    our_depth = 2  # supervisor, fork server, workers (see daemon_tree)
    claude_per_message = False  # a warm claude per thread: only a new thread starts one

    def __init__(self, idle_seconds: int | None, code: Path = ROOT) -> None:
        self.code = code
        self.tmp = Path(tempfile.mkdtemp(prefix="ccm-"))
        self.times = self.tmp / "times"
        self.started_for_it = True  # the last message's claude was started on its path
        self.fake_claude = self.tmp / "claude"
        self.fake_claude.write_text(
            "#!/bin/sh\n"
            f"FAKE_CLAUDE_TIMES={shlex.quote(str(self.times))} "
            f"FAKE_CLAUDE_STATE={shlex.quote(str(self.tmp / 'fake-state'))} "
            f"exec {shlex.quote(sys.executable)} "
            f'{shlex.quote(str(ROOT / "tests" / "fake_claude.py"))} "$@"\n'
        )
        self.fake_claude.chmod(0o755)
        self.idle_seconds = idle_seconds
        self.fake = StampedDiscord()
        # the daemon's log mode: json lines to a file, or journald's native protocol to a
        # socket of ours that drops every entry (the mode a systemd service runs in)
        self.log_mode = os.environ.get("BENCH_LOG_MODE", "json")
        self.journal: socket.socket | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.paths = ProjectPaths.for_project(self.tmp / "project")

    async def start(self) -> None:
        await self.fake.start()
        discord.http.Route.BASE = self.fake.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.fake.gateway_url)
        self.paths.state_dir.mkdir(parents=True, mode=0o700)
        limits: dict[str, Any] = {"maxConcurrentRuns": 8, "maxWorkers": 128}
        if self.idle_seconds is not None:
            limits["workerIdleSeconds"] = self.idle_seconds
        settings = {
            "discord": {
                "token": self.fake.token,
                "allowedUserIds": [self.fake.alice["id"]],
                "listenChannels": [self.fake.listen_id],
                "progressAfterSeconds": 60,
            },
            "runner": {"claudePath": str(self.fake_claude)},
            "limits": limits,
        }
        self.paths.settings_file.write_text(json.dumps(settings))
        self.paths.settings_file.chmod(0o600)
        env = dict(os.environ)
        env.update(
            FAKE_DISCORD_API=self.fake.api_base,
            FAKE_DISCORD_GATEWAY=self.fake.gateway_url,
            PYTHONPATH=str(self.code),
            RUNTIME_DIRECTORY=str(self.tmp / "run"),
        )
        env.pop("DISCORD_TOKEN", None)
        env.pop("NOTIFY_SOCKET", None)
        if self.log_mode == "journal":
            self.journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.journal.bind(str(self.tmp / "journal.sock"))
            self.journal.setblocking(False)
            asyncio.get_running_loop().add_reader(self.journal.fileno(), self._drop_entries)
            env["CLAUDECLAW_JOURNAL_SOCKET"] = str(self.tmp / "journal.sock")
        self._launch(
            [
                sys.executable,  # by path: ``claudeclaw`` comes from PYTHONPATH (self.code)
                str(ROOT / "tests" / "daemon_on_fake.py"),
                "run",
                "--project",
                str(self.paths.root),
                "--log-mode",
                self.log_mode,
                "--log-level",
                os.environ.get("BENCH_LOG_LEVEL", "info"),
            ],
            self.code,
            env,
        )
        os.environ["RUNTIME_DIRECTORY"] = env["RUNTIME_DIRECTORY"]
        async with asyncio.timeout(30):
            while not await control.daemon_running(self.paths):
                await asyncio.sleep(0.05)
        await self.fake.wait_until(lambda: self.fake.identify_count, timeout=30, what="identify")
        # one message through the whole path so every lazy import is done
        await self.message(self.fake.listen_thread_id, "warm up")

    def _launch(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        """Start the daemon, its output to ``daemon.log``; the fake reads its CPU at POSTs."""
        with open(self.tmp / "daemon.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        daemon = self.proc.pid
        self.fake.cpu_now = lambda: our_cpu_now(daemon, self.our_depth)

    def forkserver(self) -> psutil.Process | None:
        """The process whose reaped-children time holds the workers' exits."""
        assert self.proc is not None
        for child in psutil.Process(self.proc.pid).children():
            if "forkserver" in " ".join(child.cmdline()):
                return child
        raise RuntimeError(f"no fork server under the daemon (pid {self.proc.pid})")

    def _drop_entries(self) -> None:
        assert self.journal is not None
        with contextlib.suppress(BlockingIOError):
            while True:
                self.journal.recv(1 << 20)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        await self.fake.stop()
        if self.journal is not None:
            asyncio.get_running_loop().remove_reader(self.journal.fileno())
            self.journal.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def ours(self) -> list[psutil.Process]:
        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        return [p for p in [root, *root.children(recursive=True)] if not is_claude(p)]

    def claudes(self) -> list[psutil.Process]:
        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        return [p for p in root.children(recursive=True) if is_claude(p)]

    def supervisor_cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def stamps(self) -> list[tuple[str, str, float]]:
        """The fake ``claude``'s (pid, what, when) lines (see tests/fake_claude.py)."""
        try:
            lines = self.times.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [(pid, what, float(t)) for pid, what, t in (line.split() for line in lines)]

    async def message(self, channel: str, text: str) -> tuple[float, float, float, float]:
        """Send ``text``: (dispatched → claude has it, result → the reply's POST, claude's
        own time between, our CPU from dispatch to the POST), all in seconds."""
        assert self.proc is not None
        before = len(self.stamps())
        posted = len(self.fake.posted)
        cpu_in = our_cpu_now(self.proc.pid, self.our_depth)
        t_in = time.time()
        await self.fake.user_says(channel, text)

        def replied() -> tuple[float, dict[int, float]] | None:
            for t, ch, content, cpu in self.fake.posted[posted:]:
                if ch == channel and "FAKE-REPLY" in content:
                    return t, cpu
            return None

        t_post, cpu_post = await self.fake.wait_until(replied, timeout=30, what="the reply")
        stamps = self.stamps()
        pid, recv = next((pid, t) for pid, what, t in stamps[before:] if what == "recv")
        result = next(t for _, what, t in stamps[before:] if what == "result")
        # was that claude started for this message, or ahead of it (runner.prestartClaude)?
        start = next((t for p, what, t in stamps if p == pid and what == "start"), t_in)
        self.started_for_it = start >= t_in
        return recv - t_in, t_post - result, result - recv, window_cpu(cpu_in, cpu_post)

    async def direct_start_ms(self, n: int) -> list[float]:
        """Start the fake claude as this daemon does, ourselves: spawn → it has the prompt
        (claude's own start, taken off the daemon's in→claude time)."""
        samples = []
        for _ in range(n):
            before = len(self.stamps())
            t0 = time.time()
            await (self._cold_run() if self.claude_per_message else self._duplex_run())
            recv = next(t for _, what, t in self.stamps()[before:] if what == "recv")
            samples.append((recv - t0) * 1000)
        return samples

    async def _cold_run(self) -> None:
        """``claude -p PROMPT``, as the original runs it for every message."""
        proc = await asyncio.create_subprocess_exec(
            str(self.fake_claude),
            *("-p", "hi", "--output-format", "stream-json", "--verbose"),
            stdout=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        await proc.wait()

    async def _duplex_run(self) -> None:
        """A warm (duplex) ``claude``: ``initialize`` answered, one turn, closed."""
        proc = await asyncio.create_subprocess_exec(
            str(self.fake_claude),
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        init = {"type": "control_request", "request_id": "r1"}
        init["request"] = {"subtype": "initialize"}  # type: ignore[assignment]
        proc.stdin.write((json.dumps(init) + "\n").encode())
        await proc.stdin.drain()
        await proc.stdout.readline()
        user = {"type": "user", "message": {"role": "user", "content": "hi"}}
        proc.stdin.write((json.dumps(user) + "\n").encode())
        await proc.stdin.drain()
        while b'"result"' not in await proc.stdout.readline():
            pass
        proc.stdin.close()
        await proc.wait()


class OriginalRig(Rig):
    """The original ClaudeClaw (TypeScript on Bun) on the same fake Discord, with the same
    fake ``claude`` (first on its PATH), from a checkout of ``moazbuilds/claudeclaw`` with
    its packages installed (``bun install``). It is copied to the rig's temp directory
    and its two Discord addresses (constants in ``src/commands/discord.ts``) are pointed at
    the fake; nothing else of it changes. Its own process is all of its work: every
    process under it is a ``claude`` run (one per message, started cold)."""

    our_depth = 0
    claude_per_message = True
    CONSTANTS = (
        '"https://discord.com/api/v10"',
        '"wss://gateway.discord.gg/?v=10&encoding=json"',
    )

    def __init__(self, checkout: Path, bun: str) -> None:
        super().__init__(None)
        self.checkout = checkout
        self.bun = bun

    def forkserver(self) -> None:
        return None  # one process: no workers to exit

    async def start(self) -> None:
        await self.fake.start()
        code = self.tmp / "original"
        await asyncio.to_thread(shutil.copytree, self.checkout, code, symlinks=True)
        gateway_ts = code / "src" / "commands" / "discord.ts"
        source = gateway_ts.read_text()
        api, gateway = self.CONSTANTS
        if api not in source or gateway not in source:
            raise SystemExit(
                f"--original {self.checkout}: {gateway_ts.relative_to(code)} does not hold "
                f"the constants {api} and {gateway} to point at the fake Discord: another "
                "version of the original? (measured with moazbuilds/claudeclaw 96b5a4d)"
            )
        source = source.replace(api, json.dumps(self.fake.api_base))
        source = source.replace(gateway, json.dumps(self.fake.gateway_url + "?v=10&encoding=json"))
        gateway_ts.write_text(source)
        project = self.tmp / "original-project"
        (project / ".claude" / "claudeclaw").mkdir(parents=True)
        settings = {
            "discord": {
                "token": self.fake.token,
                "allowedUserIds": [self.fake.alice["id"]],
                "listenChannels": [self.fake.listen_id],
            }
        }
        (project / ".claude" / "claudeclaw" / "settings.json").write_text(json.dumps(settings))
        env = dict(os.environ)
        env.update(PATH=f"{self.tmp}{os.pathsep}{env.get('PATH', '')}", HOME=str(self.tmp))
        env.pop("DISCORD_TOKEN", None)
        self._launch([self.bun, "run", str(code / "src" / "index.ts"), "discord"], project, env)
        await self.fake.wait_until(lambda: self.fake.identify_count, timeout=30, what="identify")
        await self.message(self.fake.listen_thread_id, LONG_TEXT.format("warm up"))


# The side-by-side runs send messages of 200+ characters: the original asks a whole extra
# ``claude`` run (synchronously) whether each shorter guild message asks it to create or
# delete threads, which would put a second claude start into its figures.
LONG_TEXT = "{} " + "and some more words to make it long " * 6

CPU_BATCH = 10  # messages per CPU reading; the figure is the median batch


async def cpu_per_message(
    rig: Rig, n: int, one: Callable[[int], Awaitable[None]]
) -> tuple[float, float, float]:
    """``one(0..n-1)`` in batches of CPU_BATCH, each read by its own :class:`CpuMeter`:
    the median batch's CPU per message (all ours; the supervisor's), in ms, and what
    retired workers spent after their last reading, per message over all of them. A
    median of batches, not one mean over all: a stray pause (a GC pass, the machine's
    other tenants) moves one batch, not the figure."""
    ours: list[float] = []
    sup: list[float] = []
    unseen = 0.0
    for start in range(0, n, CPU_BATCH):
        size = min(CPU_BATCH, n - start)
        sup0 = rig.supervisor_cpu()
        async with CpuMeter(rig) as meter:
            for i in range(start, start + size):
                await one(i)
        ours.append(meter.ours / size * 1000)
        sup.append((rig.supervisor_cpu() - sup0) / size * 1000)
        unseen += meter.unseen
    return statistics.median(ours), statistics.median(sup), unseen / n * 1000


async def per_message(
    rig: Rig,
    n: int,
    gap: float,
    resume_gap: float,
    pyspy: str,
    only: str = "",
    text: str = "{}",
) -> tuple[list[tuple[str, str, str]], dict[str, float]]:
    """The per-message rows of ``rig``'s daemon, and their medians as numbers (for
    ``--against``); ``text``: each message's text, its ``{}`` filled in."""
    rows: list[tuple[str, str, str]] = []
    figures: dict[str, float] = {}
    spy: subprocess.Popen[bytes] | None = None
    try:
        await rig.start()
        if pyspy:  # a flame graph of the daemon's processes (py-spy must be installed)
            assert rig.proc is not None
            spy_args = os.environ.get(
                "BENCH_PYSPY_ARGS", "record --gil --nonblocking --subprocesses -r 500 -f raw"
            ).split()
            spy = subprocess.Popen(
                ["py-spy", *spy_args, "-o", pyspy, "-p", str(rig.proc.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1)
        await rig.direct_start_ms(2)  # (warm the page cache)
        starts: list[float] = []
        # new threads: each message the first of its thread (a worker and a claude start)
        walls: list[float] = []
        ins: list[float] = []
        outs: list[float] = []
        on_path: list[float] = []  # our CPU from dispatch to the reply's POST, ms
        ahead: list[bool] = []  # its claude was started before it (runner.prestartClaude)

        async def new_thread(i: int) -> None:
            # claude's own start, measured next to each sample (the machine is noisy)
            starts.extend(await rig.direct_start_ms(1))
            await asyncio.sleep(gap)
            thread = await rig.fake.create_thread(rig.fake.listen_id, f"bench {i}")
            to_claude, from_claude, _, cpu = await rig.message(
                thread, text.format(f"new thread {i}")
            )
            on_path.append(cpu * 1000)
            # claude's own start is not ours; a claude started ahead had none on the path
            ahead.append(not rig.started_for_it)
            ins.append(to_claude * 1000 - (starts[-1] if rig.started_for_it else 0.0))
            outs.append(from_claude * 1000)
            walls.append(ins[-1] + outs[-1])
            await asyncio.sleep(gap)

        cpu_new, cpu_sup, exits = await cpu_per_message(rig, n, new_thread)
        figures["new thread, wall"] = statistics.median(walls)
        figures["new thread, CPU"] = cpu_new
        figures["new thread, CPU in→posted"] = statistics.median(on_path)
        direct = statistics.median(starts)
        if spy is not None and os.environ.get("BENCH_PYSPY_NEW_ONLY"):
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.wait)
            spy = None
        rows.append(
            (
                "ours per message, new thread",
                f"{statistics.median(walls):.1f} ms",
                f"p99 {pct(walls, 99):.1f} ms; CPU {cpu_new:.1f} ms/msg, median batch ({cpu_sup:.1f} "
                f"supervisor, {exits:.1f} retired workers' exits); in→claude {statistics.median(ins):.1f} ms (claude's own start, "
                f"{direct:.0f} ms, subtracted when started on the path; {sum(ahead)}/"
                f"{len(ahead)} found one started ahead), result→posted "
                f"{statistics.median(outs):.1f} ms",
            )
        )
        rows.append(
            (
                "  of it from message in to reply posted",
                f"{statistics.median(on_path):.1f} ms",
                "CPU, median message: the issue's window (not what follows the reply: ✅, "
                "the ledger, the next spare and its claude; the thread join may overlap it)",
            )
        )
        if only == "new":
            return rows, figures
        # resumes: messages 2..n+1 of one thread, its claude warm
        thread = await rig.fake.create_thread(rig.fake.listen_id, "bench resume")
        await rig.message(thread, text.format("first"))
        await asyncio.sleep(gap)
        walls, ins, outs, on_path = [], [], [], []

        async def resume(i: int) -> None:
            # a daemon that starts claude for every message: its start is not ours either
            start = 0.0
            if rig.claude_per_message:
                start = (await rig.direct_start_ms(1))[0]
                await asyncio.sleep(gap)
            to_claude, from_claude, _, cpu = await rig.message(thread, text.format(f"again {i}"))
            on_path.append(cpu * 1000)
            ins.append(to_claude * 1000 - start)
            outs.append(from_claude * 1000)
            walls.append(ins[-1] + outs[-1])
            await asyncio.sleep(resume_gap)

        cpu_resume, cpu_sup, _ = await cpu_per_message(rig, n, resume)
        figures["resume, wall"] = statistics.median(walls)
        figures["resume, CPU"] = cpu_resume
        figures["resume, CPU in→posted"] = statistics.median(on_path)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.wait)
        rows.append(
            (
                "ours per message, resume",
                f"{statistics.median(walls):.1f} ms",
                f"{resume_gap:g} s apart; p99 {pct(walls, 99):.1f} ms; CPU {cpu_resume:.1f} ms/msg, median batch "
                f"({cpu_sup:.1f} supervisor); in→claude "
                f"{statistics.median(ins):.1f} ms, result→posted {statistics.median(outs):.1f} ms",
            )
        )
        rows.append(
            (
                "  of it from message in to reply posted",
                f"{statistics.median(on_path):.1f} ms",
                "CPU, median message (not what follows the reply: ✅, the ledger, freezing "
                "the idle claude)",
            )
        )
    finally:
        await rig.stop()
    return rows, figures


def pss(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total / MB


async def idle_cost(threads: int, idle_seconds: int | None) -> list[tuple[str, str, str]]:
    rig = Rig(idle_seconds)
    try:
        await rig.start()
        base = pss(rig.ours())
        for i in range(threads):
            thread = await rig.fake.create_thread(rig.fake.listen_id, f"idle {i}")
            await rig.message(thread, f"one message {i}")
        t_last = time.monotonic()
        await asyncio.sleep(3)  # past FREEZE_AFTER_SECONDS: the warm claudes are frozen
        ours = rig.ours()
        claudes = rig.claudes()
        workers = len(ours) - 2  # minus the supervisor and the fork server
        label = "default" if idle_seconds is None else f"workerIdleSeconds={idle_seconds}"
        return [
            (
                f"idle cost, {threads} threads ({label})",
                f"{pss(ours):.0f} MB",
                f"PSS of ours (supervisor+fork server+{workers} workers; {base:.0f} MB before) "
                f"{time.monotonic() - t_last:.0f} s after the last reply; + {len(claudes)} "
                f"warm fake claudes {pss(claudes):.0f} MB = {pss(ours) + pss(claudes):.0f} MB",
            )
        ]
    finally:
        await rig.stop()


async def against(args: argparse.Namespace) -> None:
    """``--pairs`` runs of the per-message figures on ``--against``'s code (or on the
    original, ``--original``) and on this tree's, interleaved (old, new, old, new…): the
    machine's speed drifts by tens of per cent within an hour, so a ratio is read within
    each pair and their median reported."""
    if args.original:
        other = Path(args.original).resolve()
        if not (other / "src" / "commands" / "discord.ts").is_file():
            raise SystemExit(
                f"--original {other}: not a checkout of the original ClaudeClaw (no "
                "src/commands/discord.ts); see the module's help for how to get one"
            )
        if shutil.which(args.bun) is None:
            raise SystemExit(f"--bun {args.bun}: not found; `npm install bun` gives one")
        label = "original"
        make_then: Callable[[], Rig] = functools.partial(OriginalRig, other, args.bun)
    else:
        other = Path(args.against).resolve()
        if not (other / "claudeclaw" / "__init__.py").is_file():
            raise SystemExit(f"--against {other}: not a claudeclaw checkout (no claudeclaw/)")
        label = "then"
        make_then = functools.partial(Rig, None, other)
    long = args.text == "long" or (args.text == "" and bool(args.original))
    text = LONG_TEXT if long else "{}"
    runs: dict[str, list[dict[str, float]]] = {"then": [], "now": []}
    for _ in range(args.pairs):
        for side, make in (("then", make_then), ("now", functools.partial(Rig, None))):
            _, figures = await per_message(
                make(), args.messages, args.gap, args.resume_gap, "", args.only, text
            )
            runs[side].append(figures)
    print(f"claudeclaw message bench, {other} ({label}) against {ROOT} (now)")
    print(f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, {args.pairs} pairs")
    print(
        f"| figure | {label}: median (range) | now: median (range) "
        f"| now ÷ {label} (median of pairs) |"
    )
    print("|---|---|---|---|")
    for name in runs["now"][0]:
        then = [r[name] for r in runs["then"]]
        now = [r[name] for r in runs["now"]]
        ratio = statistics.median(b / a for a, b in zip(then, now, strict=True) if a)
        print(
            f"| {name} | {statistics.median(then):.1f} ms ({min(then):.1f}–{max(then):.1f}) "
            f"| {statistics.median(now):.1f} ms ({min(now):.1f}–{max(now):.1f}) | {ratio:.2f} |"
        )


async def main(args: argparse.Namespace) -> None:
    if args.against or args.original:
        await against(args)
        return
    rows, _ = await per_message(
        Rig(None), args.messages, args.gap, args.resume_gap, args.pyspy, args.only
    )
    if not args.skip_idle:
        rows += await idle_cost(args.threads, None)
    print(f"claudeclaw message bench — {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"| {'figure':<44} | {'value':<9} | detail")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 40}")
    for name, value, detail in rows:
        print(f"| {name:<44} | {value:<9} | {detail}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20, help="samples per figure")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between messages")
    parser.add_argument(
        "--resume-gap",
        type=float,
        default=2.5,
        help="seconds between a thread's messages (past 2 s its idle claude is frozen)",
    )
    parser.add_argument("--threads", type=int, default=75, help="threads in the idle scenario")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument(
        "--only", choices=["new"], default="", help="only the new-thread figure (A/B runs)"
    )
    parser.add_argument("--pyspy", default="", help="write a py-spy raw profile here")
    parser.add_argument(
        "--against",
        default="",
        metavar="DIR",
        help="another checkout (e.g. a git worktree of an older commit): its code and this "
        "tree's, runs interleaved, per-message figures and their ratios (no idle figure)",
    )
    parser.add_argument(
        "--original",
        default="",
        metavar="DIR",
        help="a checkout of the original ClaudeClaw (moazbuilds/claudeclaw, `bun install` "
        "done): it and this tree, runs interleaved, on the same fake Discord and fake claude",
    )
    parser.add_argument("--bun", default="bun", help="the Bun executable, with --original")
    parser.add_argument(
        "--text",
        choices=["short", "long"],
        default="",
        help="messages of a few words or of 200+ characters (default: long with --original, "
        "else short)",
    )
    parser.add_argument(
        "--pairs", type=int, default=3, help="interleaved runs with --against or --original"
    )
    asyncio.run(main(parser.parse_args()))
