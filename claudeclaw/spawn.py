"""How worker processes are started: forked by the fork server, or exec'd one by one.

``limits.workerStartMethod`` chooses: ``forkserver`` (default: a worker is ready in a few
ms and shares the imported code with its siblings) or ``exec`` (a fresh interpreter per
worker, ~120 ms and ~17 MB private each). If the fork server cannot start or dies, the
pool falls back to exec and says so in the log. bench/bench.py measures both.

Both give the pool the same small process interface (:class:`WorkerProcess`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from claudeclaw import ipc
from claudeclaw.errors import IpcError
from claudeclaw.logs import get_logger

log = get_logger()


class WorkerProcess(Protocol):
    """What the pool needs of a worker process (asyncio's Process has exactly this)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


def worker_argv(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "claudeclaw.worker", *args]


class ExecSpawner:
    """A fresh interpreter per worker (``python -m claudeclaw.worker``)."""

    method = "exec"

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    async def start(self, env: Mapping[str, str]) -> None:
        return None

    async def spawn(self, args: list[str], env: Mapping[str, str]) -> WorkerProcess:
        return await asyncio.create_subprocess_exec(
            *worker_argv(args),
            stdin=asyncio.subprocess.DEVNULL,
            env=dict(env),
            cwd=str(self.cwd),
            start_new_session=True,
        )

    async def close(self) -> None:
        return None


class ForkedProcess:
    """A worker forked by the fork server: exit seen through a pidfd, code from the server."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._rc_reported: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._exited = asyncio.Event()
        self._pidfd = -1
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._exited.set()
            return
        asyncio.get_running_loop().add_reader(self._pidfd, self._on_pidfd)

    def _on_pidfd(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._exited.set()

    def report_exit(self, rc: int) -> None:
        if not self._rc_reported.done():
            self._rc_reported.set_result(rc)

    async def wait(self) -> int:
        await self._exited.wait()
        if self.returncode is None:
            try:  # the server's report normally arrives within microseconds of the exit
                async with asyncio.timeout(2):
                    self.returncode = await asyncio.shield(self._rc_reported)
            except TimeoutError:
                self.returncode = -1
        return self.returncode

    def send_signal(self, sig: int) -> None:
        # safe: the fork server reaps the pid only after it exits, so it cannot be reused
        # before our pidfd has told us it exited
        if not self._exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class ForkServerSpawner:
    """Talks to ``python -m claudeclaw.forkserver`` over a socketpair."""

    method = "forkserver"

    def __init__(self, cwd: Path, nice: int = 0) -> None:
        self.cwd = cwd
        self.nice = nice
        self.server: asyncio.subprocess.Process | None = None
        self.channel: ipc.Channel | None = None
        self.replies: dict[int, asyncio.Future[int]] = {}  # spawn requests awaiting an answer
        self.children: dict[int, ForkedProcess] = {}
        self.early_exits: dict[int, int] = {}
        self._reqs = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self.broken = False

    async def start(self, env: Mapping[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.server = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "claudeclaw.forkserver",
                "--fd",
                str(theirs.fileno()),
                "--nice",
                str(self.nice),
                stdin=asyncio.subprocess.DEVNULL,
                env=dict(env),
                cwd=str(self.cwd),
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=ipc.MAX_FRAME_BYTES)
        self.channel = ipc.Channel(reader, writer)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        log.info("forkserver.started", forkserver_pid=self.server.pid)

    async def _read(self) -> None:
        assert self.channel is not None
        try:
            while True:
                message = await self.channel.recv()
                if message is None:
                    break
                kind = message["type"]
                if kind == "spawned":
                    future = self.replies.pop(int(message["req"]), None)
                    if future is not None and not future.done():
                        future.set_result(int(message["pid"]))
                elif kind == "spawn_failed":
                    future = self.replies.pop(int(message["req"]), None)
                    if future is not None and not future.done():
                        future.set_exception(OSError(str(message.get("error"))))
                elif kind == "exited":
                    pid, rc = int(message["pid"]), int(message["rc"])
                    child = self.children.pop(pid, None)
                    if child is not None:
                        child.report_exit(rc)
                    else:
                        self.early_exits[pid] = rc
        except (IpcError, ConnectionError) as exc:
            log.error("forkserver.protocol_error", error=str(exc))
        self.broken = True
        for future in self.replies.values():
            if not future.done():
                future.set_exception(OSError("the fork server went away"))
        self.replies.clear()
        # nobody will report how the workers it forked end: their wait() need not wait for it
        for child in self.children.values():
            child.report_exit(-1)
        self.children.clear()
        if not self._closing:
            log.error("forkserver.lost", hint="new workers will be started by exec")

    _closing = False

    async def spawn(self, args: list[str], env: Mapping[str, str]) -> WorkerProcess:
        if self.broken or self.channel is None:
            raise OSError("the fork server is not running")
        req = next(self._reqs)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.replies[req] = future
        await self.channel.send({"type": "spawn", "req": req, "args": args, "env": dict(env)})
        async with asyncio.timeout(10):
            pid = await future
        child = ForkedProcess(pid)
        if pid in self.early_exits:
            child.report_exit(self.early_exits.pop(pid))
        else:
            self.children[pid] = child
        return child

    async def close(self) -> None:
        self._closing = True
        if self.channel is not None:
            await self.channel.close()
        # a cancel of the task calling close() (the pool's shutdown cancelling a worker start
        # that is falling back to exec) must reach it: so asyncio.wait, not a suppressed
        # await, and asyncio.timeout, not 3.11's wait_for (it returns the inner result
        # instead of raising the cancel when that result is already there)
        if self._reader is not None:
            await asyncio.wait([self._reader])
        if self.server is not None:
            try:
                async with asyncio.timeout(5):
                    await self.server.wait()
            except TimeoutError:
                self.server.kill()
                await self.server.wait()


Spawner = ExecSpawner | ForkServerSpawner
