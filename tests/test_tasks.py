"""Background tasks: held until they end, and a failure is always logged."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from claudeclaw.tasks import TaskSet


async def test_a_failing_background_task_is_logged_and_released() -> None:
    tasks = TaskSet("pool")

    async def boom() -> None:
        raise RuntimeError("lost silently before")

    with capture_logs() as logs:
        task = tasks.start(boom(), "health")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # the done callback runs on the next loop turn
    failed = [e for e in logs if e["event"] == "task.failed"]
    assert len(failed) == 1
    assert failed[0]["owner"] == "pool" and failed[0]["task"] == "pool-health"
    assert failed[0]["error"] == "RuntimeError"
    assert len(tasks) == 0


async def test_cancel_all_ends_every_task_without_logging_a_failure() -> None:
    tasks = TaskSet("discord")
    forever = asyncio.Event()
    with capture_logs() as logs:
        started = [tasks.start(forever.wait(), "message") for _ in range(3)]
        tasks.start(forever.wait(), "prune")
        assert len(tasks.named("message")) == 3
        await tasks.cancel_all()
    assert all(t.cancelled() for t in started)
    assert len(tasks) == 0
    assert not [e for e in logs if e["event"] == "task.failed"]
