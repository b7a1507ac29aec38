#!/usr/bin/env python3
"""Speed and memory figures of the supervisor and its workers, printed as one table.

    python bench/bench.py [--quick]

Runs the real supervisor in this process (so the event loop can be observed) with real
worker processes and the fake ``claude`` (tests/fake_claude.py) at a fixed latency.
Figures are medians/percentiles over repeated samples; the machine is noisy, so compare
ratios and re-run before believing a small difference. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from claudeclaw.config import load_settings  # noqa: E402
from claudeclaw.model import RunDone, RunStarted, SessionKey, is_final  # noqa: E402
from claudeclaw.paths import ProjectPaths  # noqa: E402
from claudeclaw.supervisor import Supervisor  # noqa: E402

TARGETS = {
    "dispatch overhead p50": ("≤ 15 ms", 15.0),
    "dispatch overhead p50 [warm]": ("≤ 15 ms", 15.0),
    "worker spawn p50": ("≤ 150 ms", 150.0),
    "worker spawn p50 [exec]": ("≤ 150 ms", 150.0),
    "idle worker USS": ("≤ 15 MB", 15.0),
    "idle worker USS [exec]": ("≤ 15 MB", 15.0),
    "supervisor RSS, 100 workers": ("≤ 120 MB", 120.0),
    "supervisor RSS, 100 workers [exec]": ("≤ 120 MB", 120.0),
    "loop lag p99, 100 msgs/50 threads": ("≤ 50 ms", 50.0),
}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.rows: list[tuple[str, str, str, str]] = []
        self.medians: dict[str, float] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="ccb-"))
        self.fake = self.tmp / "claude"
        self.fake.write_text(
            f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
            f'{shlex.quote(str(ROOT / "tests" / "fake_claude.py"))} "$@"\n'
        )
        self.fake.chmod(0o755)
        os.environ["FAKE_CLAUDE_STATE"] = str(self.tmp / "fake-state")
        os.environ["RUNTIME_DIRECTORY"] = str(self.tmp / "run")
        os.environ.pop("DISCORD_TOKEN", None)
        os.environ.pop("NOTIFY_SOCKET", None)

    def row(self, name: str, value: str, detail: str = "") -> None:
        target = TARGETS.get(name, ("", 0.0))[0]
        self.rows.append((name, value, target, detail))
        print(f"  {name}: {value} {detail}", file=sys.stderr)

    def project(self, name: str, warm: bool = True, **limits: Any) -> ProjectPaths:
        """A project for one scenario; ``limits`` override the bench defaults."""
        paths = ProjectPaths.for_project(self.tmp / name)
        paths.state_dir.mkdir(parents=True, mode=0o700)
        settings = {
            "runner": {"claudePath": str(self.fake), "killGraceSeconds": 1, "warmSessions": warm},
            "limits": {
                "maxConcurrentRuns": 16,
                "maxWorkers": 128,
                "maxIdleWorkers": 128,  # the figures below are about 100 live workers
                "workerIdleSeconds": 600,
                "shutdownGraceSeconds": 5,
                **limits,
            },
        }
        paths.settings_file.write_text(json.dumps(settings))
        return paths

    async def supervisor(self, name: str, warm: bool = True, **limits: Any) -> Supervisor:
        paths = self.project(name, warm, **limits)
        sup = Supervisor(
            paths, load_settings(paths.settings_file), log_mode="json", log_level="error"
        )
        await sup.startup()
        return sup

    async def run(
        self, sup: Supervisor, key: str, prompt: str, on: Callable[..., Any] | None = None
    ) -> Any:
        last = None
        async for event in sup.submit(SessionKey(key), prompt, origin="bench"):
            if on is not None:
                on(event)
            last = event
            if is_final(event):
                break
        return last

    # ---- the measurements ---------------------------------------------------------------

    async def direct_spawn_ms(self, n: int) -> list[float]:
        """Baseline: start the fake claude directly (as the runner does) until it answers."""
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                str(self.fake),
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--",
                "hi",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            samples.append((time.perf_counter() - t0) * 1000)
            await proc.communicate()
        return samples

    async def dispatch_overhead(self) -> None:
        """Cold runs (runner.warmSessions false): submit → claude started, minus starting the
        fake directly. Warm: submit → the message written to the warm claude (no start)."""
        n = 15 if self.quick else 40
        samples = await self._submit_to_started("dispatch", n, warm=False)
        direct = await self.direct_spawn_ms(n)
        over = [s - statistics.median(direct) for s in samples]
        self.row(
            "dispatch overhead p50",
            f"{statistics.median(over):.1f} ms",
            f"(p99 {pct(over, 99):.1f} ms; submit→claude started {statistics.median(samples):.1f} ms "
            f"vs direct start {statistics.median(direct):.1f} ms)",
        )
        warm = await self._submit_to_started("dispatch-warm", n, warm=True)
        self.row(
            "dispatch overhead p50 [warm]",
            f"{statistics.median(warm):.1f} ms",
            f"(p99 {pct(warm, 99):.1f} ms; submit→the turn starts in the warm claude)",
        )

    async def _submit_to_started(self, name: str, n: int, *, warm: bool) -> list[float]:
        sup = await self.supervisor(name, warm)
        try:
            await self.run(sup, "1", "warm up")  # the worker exists from here on
            samples = []
            for i in range(n):
                t0 = time.perf_counter()
                seen: list[float] = []

                def on(event: Any, seen: list[float] = seen, t0: float = t0) -> None:
                    if isinstance(event, RunStarted) and not seen:
                        seen.append((time.perf_counter() - t0) * 1000)

                await self.run(sup, "1", f"m{i}", on)
                samples.append(seen[0])
        finally:
            await sup.shutdown()
        return samples

    async def parallel_speedup(self) -> None:
        latency = 1.0
        os.environ["FAKE_CLAUDE_LATENCY"] = str(latency)
        try:
            sup = await self.supervisor("parallel")
            try:
                counts = [1, 2, 4, 8] if self.quick else [1, 2, 4, 8, 16]
                # warm every worker first so the figure is about runs, not spawns
                await asyncio.gather(
                    *(self.run(sup, str(k + 10), "SLEEP:0") for k in range(max(counts)))
                )
                parts = []
                for n in counts:
                    t0 = time.perf_counter()
                    await asyncio.gather(*(self.run(sup, str(k + 10), f"go{n}") for k in range(n)))
                    wall = time.perf_counter() - t0
                    parts.append(f"{n}:{n * latency / wall:.1f}x")
                self.row(
                    "parallel speedup (threads:×)",
                    " ".join(parts),
                    f"(fake claude {latency:.0f} s per run, 2 cores)",
                )
            finally:
                await sup.shutdown()
        finally:
            os.environ.pop("FAKE_CLAUDE_LATENCY", None)

    async def spawn_and_memory(self, method: str) -> None:
        label = "" if method == "forkserver" else " [exec]"
        sup = await self.supervisor(f"memory-{method}", workerStartMethod=method)
        try:
            import discord  # noqa: F401  - the supervisor of a real deployment has it loaded

            assert sup.pool is not None
            # one at a time: the latency a new thread sees on a quiet daemon
            single = []
            for k in range(10 if self.quick else 20):
                await self.run(sup, str(5000 + k), "SLEEP:0")
                h = sup.pool.find(SessionKey(str(5000 + k)))
                assert h is not None
                single.append((h.ready_at - h.spawned_at) * 1000)
            self.row(
                "worker spawn p50" + label,
                f"{statistics.median(single):.0f} ms",
                f"(p99 {pct(single, 99):.0f} ms; spawn → worker said hello)",
            )
            self.medians[f"spawn {method}"] = statistics.median(single)
            n = 100
            await asyncio.gather(*(self.run(sup, str(1000 + k), "SLEEP:0") for k in range(n)))
            handles = [sup.pool.find(SessionKey(str(1000 + k))) for k in range(n)]
            burst = [(h.ready_at - h.spawned_at) * 1000 for h in handles if h is not None]
            self.row(
                "worker spawn p50, 100 at once" + label,
                f"{statistics.median(burst):.0f} ms",
                f"(p99 {pct(burst, 99):.0f} ms; 100 new threads + their 100 claude runs on 2 cores)",
            )
            uss = [psutil.Process(h.pid).memory_full_info().uss / 1e6 for h in handles[:20] if h]
            rss = [psutil.Process(h.pid).memory_info().rss / 1e6 for h in handles[:20] if h]
            self.row(
                "idle worker USS" + label,
                f"{statistics.median(uss):.1f} MB",
                f"(RSS {statistics.median(rss):.1f} MB; RSS counts pages shared with siblings)",
            )
            self.medians[f"uss {method}"] = statistics.median(uss)
            me = psutil.Process().memory_full_info()
            self.row(
                "supervisor RSS, 100 workers" + label,
                f"{me.rss / 1e6:.0f} MB",
                f"(USS {me.uss / 1e6:.0f} MB, discord.py loaded, "
                f"{len(sup.pool.live_handles())} live workers)",
            )
        finally:
            await sup.shutdown()

    async def loop_lag(self, rounds: int) -> None:
        """Event-loop lag while 100 messages arrive across 50 new threads (median of rounds)."""
        p99s, p50s, maxes, walls = [], [], [], []
        for r in range(rounds):
            sup = await self.supervisor(f"lag{r}")
            try:
                lags: list[float] = []
                stop = asyncio.Event()

                async def monitor(lags: list[float] = lags, stop: asyncio.Event = stop) -> None:
                    loop = asyncio.get_running_loop()
                    while not stop.is_set():
                        t0 = loop.time()
                        await asyncio.sleep(0.005)
                        lags.append((loop.time() - t0 - 0.005) * 1000)

                mon = asyncio.create_task(monitor())
                t0 = time.perf_counter()
                results = await asyncio.gather(
                    *(self.run(sup, str(20000 + (i % 50)), f"msg{i}") for i in range(100))
                )
                walls.append(time.perf_counter() - t0)
                stop.set()
                await mon
                assert sum(isinstance(x, RunDone) for x in results) == 100
                p99s.append(pct(lags, 99))
                p50s.append(statistics.median(lags))
                maxes.append(max(lags))
            finally:
                await sup.shutdown()
        self.row(
            "loop lag p99, 100 msgs/50 threads",
            f"{statistics.median(p99s):.1f} ms",
            f"(median of {rounds} rounds: {', '.join(f'{x:.0f}' for x in p99s)}; "
            f"p50 {statistics.median(p50s):.1f} ms, max {statistics.median(maxes):.0f} ms; "
            f"100 replies in {statistics.median(walls):.1f} s incl. 50 spawns)",
        )

    def full_collection(self) -> None:
        """A forked worker's first full garbage collection: it walks only the worker's own
        objects, not the fork server's frozen ones (which it would write to, copying them)."""
        done = subprocess.run(
            [sys.executable, "-m", "tests.forked_worker_gc"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        figures = json.loads(done.stdout)
        self.row(
            "a worker's full gc",
            f"{figures['gc_ms']:.2f} ms CPU",
            f"(+{figures['grew_mb']:.1f} MB private; a child that unfroze the fork server's objects: "
            "~10 ms, +6.5 MB)",
        )

    def table(self) -> str:
        lines = [
            f"claudeclaw bench — {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
            f"{time.strftime('%Y-%m-%d')}",
            "",
            f"| {'figure':<36} | {'value':<22} | {'target':<9} | detail",
            f"|{'-' * 38}|{'-' * 24}|{'-' * 11}|{'-' * 40}",
        ]
        for name, value, target, detail in self.rows:
            lines.append(f"| {name:<36} | {value:<22} | {target:<9} | {detail}")
        return "\n".join(lines)

    async def main(self) -> None:
        try:
            await self.dispatch_overhead()
            await self.spawn_and_memory("forkserver")
            await self.spawn_and_memory("exec")
            m = self.medians
            self.row(
                "ratio exec / fork server: spawn",
                f"{m['spawn exec'] / m['spawn forkserver']:.1f}x",
                "(how much slower a new thread's worker starts by exec)",
            )
            self.row(
                "ratio exec / fork server: idle USS",
                f"{m['uss exec'] / m['uss forkserver']:.1f}x",
                "(how much more private memory an exec'd worker keeps)",
            )
            self.full_collection()
            await self.loop_lag(3 if self.quick else 5)
            await self.parallel_speedup()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        print(self.table())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    from claudeclaw.logs import configure_logging

    configure_logging(level="error", mode="json")
    asyncio.run(Bench(args.quick).main())


if __name__ == "__main__":
    main()
