"""Worker starts and exits at the edges: a stop during a start, a dead fork server.

The pool's shutdown closes the fork server and then cancels the worker starts still in
flight. A start that the closed fork server made fall back to exec is itself inside
``ForkServerSpawner.close()`` then; if that swallowed the cancel, the start went on, spawned
a worker that could no longer connect, and the stop waited out the 15 s hello timeout.

A worker of a fork server that died: its exit is seen at once, not after waiting for a
report that cannot come.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from claudeclaw.model import RunFailed, SessionKey
from claudeclaw.spawn import ForkedProcess, ForkServerSpawner
from claudeclaw.supervisor import Supervisor
from tests.fixtures_daemon import collect, final, without_spare


class ExitingServer:
    """A fork server process whose exit the test decides."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        self.waiting.set()
        return await self.exited

    def kill(self) -> None:
        if not self.exited.done():
            self.exited.set_result(-9)


class ClosingChannel:
    """The supervisor's end of the fork server's socket; ``closed`` once close() ran."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def close(self) -> None:
        self.closed.set()


def closing(spawner: ForkServerSpawner) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(spawner.close())


async def test_a_cancel_reaches_the_task_closing_the_fork_server_while_its_reader_ends(
    tmp_path: Path,
) -> None:
    """1. close() closed the socket and waits for its reader to end.
    2. The task calling close() is cancelled.
    Result: the task ends cancelled (the cancel is not taken for the reader's)."""
    spawner = ForkServerSpawner(tmp_path)
    channel = ClosingChannel()
    spawner.channel = channel  # type: ignore[assignment]
    spawner._reader = asyncio.get_running_loop().create_task(asyncio.Event().wait())  # type: ignore[arg-type]
    server = ExitingServer()
    server.kill()  # its wait() returns at once: only the reader can hold close()
    spawner.server = server  # type: ignore[assignment]
    task = closing(spawner)
    await channel.closed.wait()  # (close() went on to the reader in that same step)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()
    spawner._reader.cancel()


async def test_a_cancel_reaches_the_task_closing_the_fork_server_as_it_exits(
    tmp_path: Path,
) -> None:
    """1. close() waits for the fork server process to exit.
    2. It exits, and in the same loop turn the task calling close() is cancelled.
    Result: the task ends cancelled (3.11's wait_for would return the exit code instead)."""
    spawner = ForkServerSpawner(tmp_path)
    server = ExitingServer()
    spawner.server = server  # type: ignore[assignment]
    task = closing(spawner)
    await server.waiting.wait()
    server.exited.set_result(0)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()


async def test_a_stop_while_a_worker_starts_ends_its_message_at_once(daemon: Supervisor) -> None:
    """1. A message's worker is still being spawned (the spawn hangs).
    2. The daemon stops.
    Result: the stop does not wait for the start; the message ends with reason
    ``shutdown`` (so a frontend keeps it for the restart), not never."""
    assert daemon.pool is not None
    await without_spare(daemon.pool)  # the message's worker is spawned
    spawning = asyncio.Event()

    async def hanging(args: Any, env: Any) -> Any:
        spawning.set()
        await asyncio.Event().wait()

    daemon.pool.spawner.spawn = hanging  # type: ignore[method-assign]
    run = asyncio.get_running_loop().create_task(
        collect(daemon, SessionKey("970000000000000001"), "never starts")
    )
    await spawning.wait()
    async with asyncio.timeout(10):  # a safety net: the hello timeout alone is 15 s
        await daemon.shutdown()
        failed = final(await run)
    assert isinstance(failed, RunFailed) and failed.reason == "shutdown"


class EndedChannel:
    """The fork server's socket after the server died: end of stream at once."""

    async def recv(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_worker_of_a_dead_fork_server_is_seen_to_exit_at_once(tmp_path: Path) -> None:
    """1. A worker forked by the fork server is running; the fork server dies.
    2. The worker exits.
    Result: its wait() returns at once (exit code unknown: -1), not after waiting 2 s for
    the report a dead server cannot send (the pool notices the exit that much later)."""
    spawner = ForkServerSpawner(tmp_path)
    worker = await asyncio.create_subprocess_exec("sleep", "60")
    child = ForkedProcess(worker.pid)
    spawner.children[worker.pid] = child
    spawner.channel = EndedChannel()  # type: ignore[assignment]
    await spawner._read()
    assert spawner.broken and not spawner.children
    worker.kill()
    async with asyncio.timeout(1):  # the old wait: 2 s for the report
        assert await child.wait() == -1
    await worker.wait()
