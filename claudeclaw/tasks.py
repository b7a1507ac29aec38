"""Background tasks that never fail silently.

``asyncio`` keeps only a weak reference to a task, so a fire-and-forget task must be held
somewhere, and an exception in it is only reported when the task is garbage collected, if
ever. :class:`TaskSet` is the one place that does both for the supervisor, the pool, the
Discord frontend and the worker: it holds each task until it ends and logs the failure of
any task that raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any

from claudeclaw.logs import get_logger

log = get_logger()


class TaskSet:
    """The running background tasks of one owner (``owner`` names it in the log)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run ``coro`` in the background; a failure is logged when it happens."""
        task_name = f"{self.owner}-{name}" if name else None
        task = asyncio.get_running_loop().create_task(coro, name=task_name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "task.failed",
                owner=self.owner,
                task=task.get_name(),
                error=type(exc).__name__,
                exc_info=exc,
            )

    def named(self, name: str) -> list[asyncio.Task[Any]]:
        """The running tasks started with ``name``."""
        full = f"{self.owner}-{name}"
        return [task for task in self._tasks if task.get_name() == full]

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every task and wait until each has ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
