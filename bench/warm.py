#!/usr/bin/env python3
"""Warm vs cold ``claude``: the CLI's own overhead per message, and what a warm one costs.

    python bench/warm.py [--messages N] [--latency S] [--idle S]

Uses the real pinned CLI (``$CLAUDECLAW_REAL_CLAUDE`` or the CI cache path) against the
loopback fake Anthropic API answering every request after a fixed latency, through
``ClaudeSessionRunner`` (the object the worker uses), so both paths run our real code:

* **overhead per message** = wall time of ``runner.run`` minus the API's time (latency x
  requests the message made), for messages 2..N of one thread sent ``--gap`` s apart (so a
  warm one is frozen in between and thawed for the message), warm vs cold, same run;
* **Claude's CPU per message**: what the ``claude`` processes spent on messages 2..N (the
  live warm one's tree, read before and after; the cold ones from this process's reaped
  children's times): the machine's CPU a message costs beside ours (``bench/message.py``);
* **a new session's first message**: its overhead (as above) with its ``claude`` started
  for it, and started ahead by ``ClaudeSessionRunner.prestart`` (``runner.prestartClaude``:
  what the spare worker does) and frozen ``--gap`` s before it, interleaved;
* **idle warm claude**: RSS (its process tree) and CPU used over ``--idle`` seconds once
  it is frozen (SIGSTOP, ``FREEZE_AFTER_SECONDS`` after its turn), and over the second
  before that;
* **running claude**: peak RSS during a turn (what ``limits.maxConcurrentRuns`` divides by);
* **parallel**: 8 warm threads each sent a turn with a 1 s model time at once, at the default
  ``limits.maxConcurrentRuns`` of this machine: wall time until all are answered.

Nothing here is a test; the machine is shared and noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from claudeclaw.claude import session_runner  # noqa: E402
from claudeclaw.claude.session_runner import ClaudeSessionRunner  # noqa: E402
from claudeclaw.config import (  # noqa: E402
    RunnerSettings,
    Settings,
    default_max_concurrent_runs,
    default_max_warm_sessions,
)
from claudeclaw.model import RunDone, RunEvent, RunStarted  # noqa: E402
from tests.fake_anthropic import FakeAnthropic  # noqa: E402
from tests.fixtures_claude import DEFAULT_REAL_CLAUDE, OFFLINE_ENV  # noqa: E402

MB = 1024 * 1024


def _tree_sum(pid: int, measure: Callable[[psutil.Process], float]) -> float:
    """``measure`` summed over ``pid`` and its descendants (a process that is gone counts 0)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            total += measure(p)
        except psutil.Error:
            pass
    return total


def tree_rss(pid: int) -> int:
    return int(_tree_sum(pid, lambda p: p.memory_info().rss))


def tree_cpu(pid: int) -> float:
    def cpu(p: psutil.Process) -> float:
        times = p.cpu_times()
        return times.user + times.system

    return _tree_sum(pid, cpu)


def claude_cpu_now(runner: ClaudeSessionRunner) -> float:
    """CPU seconds of the ``claude`` processes so far: those this process has reaped (cold
    runs, a closed warm one) and the live warm one's tree."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    pid = runner.status().claude_pid
    return reaped.ru_utime + reaped.ru_stime + (tree_cpu(pid) if pid else 0.0)


class Env:
    def __init__(self, tmp: Path, api: FakeAnthropic) -> None:
        self.tmp = tmp
        self.api = api
        self.count = 0

    def make(self) -> tuple[Path, dict[str, str]]:
        """A fresh HOME and workdir, like one thread of a project."""
        self.count += 1
        home = self.tmp / f"home{self.count}"
        work = self.tmp / f"work{self.count}"
        (home / "tmp").mkdir(parents=True)
        work.mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "TMPDIR": str(home / "tmp"),
            "LANG": "C.UTF-8",
            "ANTHROPIC_BASE_URL": self.api.url,
            **OFFLINE_ENV,
        }
        return work, env


async def timed_message(
    env: Env,
    runner: ClaudeSessionRunner,
    settings: Settings,
    prompt: str,
    session: str | None = None,
) -> tuple[RunDone, float, int]:
    """One message through ``runner``: its result, wall time (s) and API requests."""
    before = len(env.api.message_requests())
    started = time.perf_counter()
    final = await runner.run(
        settings, prompt, session_id=session, msg_id="m", on_event=lambda _e: None
    )
    wall = time.perf_counter() - started
    assert isinstance(final, RunDone), final
    return final, wall, len(env.api.message_requests()) - before


async def thread_overheads(
    env: Env, settings: Settings, messages: int, latency: float, gap: float
) -> tuple[list[float], list[float], float]:
    """Overheads (ms) of messages 2..N of one thread: beyond the API's time, and beyond the
    CLI's own reported turn time (``duration_ms``: what is left is pipes and our code);
    and Claude's CPU (ms) per message over them."""
    work, child_env = env.make()
    runner = ClaudeSessionRunner(work, env=child_env)
    session: str | None = None
    out: list[float] = []
    outside_cli: list[float] = []
    cpu_start = 0.0
    try:
        for i in range(messages):
            if i:
                await asyncio.sleep(gap)  # a person types: the warm claude is frozen by now
            if i == 1:
                cpu_start = claude_cpu_now(runner)
            final, wall, requests = await timed_message(
                env, runner, settings, f"SLOW:{latency} message {i}", session
            )
            session = final.session_id
            if i > 0:
                out.append((wall - latency * requests) * 1000)
                outside_cli.append(wall * 1000 - final.duration_ms)
        cpu_ms = (claude_cpu_now(runner) - cpu_start) * 1000 / max(1, messages - 1)
    finally:
        await runner.close()
    return out, outside_cli, cpu_ms


async def first_message_overhead(
    env: Env, settings: Settings, latency: float, gap: float, ahead: bool
) -> float:
    """Overhead (ms) of a new session's first message: its ``claude`` started for it, or
    (``ahead``) started ``gap`` s before it by :meth:`ClaudeSessionRunner.prestart`, as the
    spare worker does (``runner.prestartClaude``), and frozen by then."""
    work, child_env = env.make()
    changed = asyncio.Event()
    runner = ClaudeSessionRunner(work, env=child_env, on_warm_changed=changed.set)
    try:
        if ahead:
            runner.prestart(settings)
            await asyncio.wait_for(changed.wait(), 120)
            await asyncio.sleep(gap)
        _, wall, requests = await timed_message(env, runner, settings, f"SLOW:{latency} first")
    finally:
        await runner.close()
    return (wall - latency * requests) * 1000


async def idle_and_running(env: Env, settings: Settings, idle_s: float) -> dict[str, float]:
    work, child_env = env.make()
    runner = ClaudeSessionRunner(work, env=child_env)
    pid = 0
    peak = 0

    def on_event(event: RunEvent) -> None:
        nonlocal pid
        if isinstance(event, RunStarted):
            pid = event.pid

    try:
        first = await runner.run(settings, "hello", session_id=None, msg_id="a", on_event=on_event)
        assert isinstance(first, RunDone), first
        task = asyncio.create_task(
            runner.run(
                settings, "SLOW:2 busy", session_id=first.session_id, msg_id="b", on_event=on_event
            )
        )
        while not task.done():
            peak = max(peak, tree_rss(pid))
            await asyncio.sleep(0.05)
        await task
        # Not frozen yet (FREEZE_AFTER_SECONDS): what the idle CLI costs when left running.
        await asyncio.sleep(0.5)
        cpu_before = tree_cpu(pid)
        awake_s = max(0.5, session_runner.FREEZE_AFTER_SECONDS - 1.0)
        await asyncio.sleep(awake_s)
        awake = tree_cpu(pid) - cpu_before
        await asyncio.sleep(1.0)  # frozen by now
        assert runner.status().frozen, "the idle warm claude was not frozen"
        rss_idle = tree_rss(pid)
        cpu_before = tree_cpu(pid)
        await asyncio.sleep(idle_s)
        frozen = tree_cpu(pid) - cpu_before
        return {
            "idle_rss_mb": rss_idle / MB,
            "idle_cpu_ms_per_min": frozen * 1000 * 60 / idle_s,
            "awake_cpu_ms_per_min": awake * 1000 * 60 / awake_s,
            "running_peak_rss_mb": peak / MB,
        }
    finally:
        await runner.close()


async def parallel(env: Env, settings: Settings, threads: int, cap: int) -> float:
    runners: list[tuple[ClaudeSessionRunner, str]] = []
    slots = asyncio.Semaphore(cap)
    try:
        for _ in range(threads):  # warm them up one by one (not measured)
            work, child_env = env.make()
            runner = ClaudeSessionRunner(work, env=child_env)
            first = await runner.run(
                settings, "warm up", session_id=None, msg_id="w", on_event=lambda _e: None
            )
            assert isinstance(first, RunDone), first
            runners.append((runner, first.session_id))

        async def one(runner: ClaudeSessionRunner, session: str) -> None:
            async with slots:
                final = await runner.run(
                    settings, "SLOW:1 go", session_id=session, msg_id="p", on_event=lambda _e: None
                )
            assert isinstance(final, RunDone), final

        started = time.perf_counter()
        await asyncio.gather(*(one(r, s) for r, s in runners))
        return time.perf_counter() - started
    finally:
        await asyncio.gather(*(r.close() for r, _ in runners))


async def main_async(args: argparse.Namespace) -> None:
    claude = Path(os.environ.get("CLAUDECLAW_REAL_CLAUDE") or DEFAULT_REAL_CLAUDE)
    if not claude.is_file():
        sys.exit(f"real claude CLI not found at {claude}: set CLAUDECLAW_REAL_CLAUDE")
    base = Settings(runner=RunnerSettings(claude_path=str(claude), idle_timeout_seconds=120.0))
    warm = base
    cold = dataclasses.replace(base, runner=dataclasses.replace(base.runner, warm_sessions=False))
    with tempfile.TemporaryDirectory(prefix="cc-bench-warm-") as tmp, FakeAnthropic() as api:
        env = Env(Path(tmp), api)
        results: dict[str, Any] = {}
        warm_ms: list[float] = []
        cold_ms: list[float] = []
        warm_outside: list[float] = []
        warm_cpu: list[float] = []
        cold_cpu: list[float] = []
        for _ in range(args.rounds):  # interleaved, so both see the same machine load
            w, wo, wc = await thread_overheads(env, warm, args.messages, args.latency, args.gap)
            c, _, cc = await thread_overheads(env, cold, args.messages, args.latency, args.gap)
            warm_ms += w
            cold_ms += c
            warm_outside += wo
            warm_cpu.append(wc)
            cold_cpu.append(cc)
        first_ahead: list[float] = []
        first_cold: list[float] = []
        for _ in range(args.rounds * 2):  # a new session's first message, interleaved too
            first_ahead.append(
                await first_message_overhead(env, warm, args.latency, args.gap, ahead=True)
            )
            first_cold.append(
                await first_message_overhead(env, warm, args.latency, args.gap, ahead=False)
            )
        results["first_ahead_p50_ms"] = statistics.median(first_ahead)
        results["first_started_p50_ms"] = statistics.median(first_cold)
        results["warm_p50_ms"] = statistics.median(warm_ms)
        results["cold_p50_ms"] = statistics.median(cold_ms)
        results["warm_outside_cli_p50_ms"] = statistics.median(warm_outside)
        results["warm_cpu_ms"] = statistics.median(warm_cpu)
        results["cold_cpu_ms"] = statistics.median(cold_cpu)
        results.update(await idle_and_running(env, warm, args.idle))
        cap = default_max_concurrent_runs()
        results["default_max_concurrent_runs"] = cap
        results["default_max_warm_sessions"] = default_max_warm_sessions()
        results["parallel_8x1s_wall_s"] = await parallel(env, warm, 8, cap)
    print(
        f"CLI {claude}, API latency {args.latency} s, {args.gap} s between messages, "
        f"{len(warm_ms)} samples each"
    )
    print(f"{'figure':45} value")
    print(f"{'overhead per message, warm p50':45} {results['warm_p50_ms']:.0f} ms")
    outside = results["warm_outside_cli_p50_ms"]
    print(f"{'  of which outside the CLI turn (pipes, ours)':45} {outside:.0f} ms")
    print(f"{'overhead per message, cold p50':45} {results['cold_p50_ms']:.0f} ms")
    ratio = results["cold_p50_ms"] / max(1.0, results["warm_p50_ms"])
    print(f"{'cold / warm':45} {ratio:.1f}x")
    ahead, started = results["first_ahead_p50_ms"], results["first_started_p50_ms"]
    print(f"{'new session 1st message, claude started ahead':45} {ahead:.0f} ms")
    print(f"{'  claude started for it':45} {started:.0f} ms")
    print(f"{'  saved by starting it ahead':45} {started - ahead:.0f} ms")
    warm_cpu_ms, cold_cpu_ms = results["warm_cpu_ms"], results["cold_cpu_ms"]
    print(f"{'Claude CPU per message, warm (median thread)':45} {warm_cpu_ms:.0f} ms")
    print(f"{'Claude CPU per message, cold (median thread)':45} {cold_cpu_ms:.0f} ms")
    print(f"{'  cold / warm':45} {cold_cpu_ms / max(1.0, warm_cpu_ms):.1f}x")
    print(f"{'idle warm claude RSS (tree)':45} {results['idle_rss_mb']:.0f} MB")
    print(f"{'idle warm claude CPU, frozen':45} {results['idle_cpu_ms_per_min']:.1f} ms/min")
    awake = results["awake_cpu_ms_per_min"]
    print(f"{'  the same before it is frozen':45} {awake:.0f} ms/min")
    print(f"{'running claude peak RSS (tree)':45} {results['running_peak_rss_mb']:.0f} MB")
    print(f"{'default limits.maxConcurrentRuns':45} {results['default_max_concurrent_runs']}")
    print(f"{'default limits.maxWarmSessions':45} {results['default_max_warm_sessions']}")
    print(
        f"{'8 warm threads x 1 s turn, at the default cap':45} {results['parallel_8x1s_wall_s']:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=6, help="messages per thread")
    parser.add_argument("--rounds", type=int, default=2, help="threads per mode")
    parser.add_argument("--latency", type=float, default=0.2, help="API latency, seconds")
    parser.add_argument("--idle", type=float, default=20.0, help="idle CPU window, seconds")
    parser.add_argument(
        "--gap", type=float, default=3.0, help="pause between a thread's messages, seconds"
    )
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
