#!/usr/bin/env python3
"""CPU and system calls of one durable state write (``jsonstore.write_json``).

    nice -n -15 python bench/statewrite.py [--writes N] [--runs N] [--strace] [--root DIR]

The supervisor's state files other than the pending ledger are written whole, in a thread:
a new thread's record in sessions.json, a DM channel noted for catch-up. This repeats
writes of a ~1 KB and a ~50 KB document to the same path (one field changes each time, as
in the daemon)
and prints the median process CPU (user + system, ``time.process_time``) per write, called
directly, through ``asyncio.to_thread`` as the supervisor does, and as ``update_json``
(read, change, write under the lock: the sessions registry); each figure is the
median over ``--runs`` runs of the per-run median (the range in brackets). ``--strace``
also counts the system calls per write: ``strace -f -c`` of N writes minus that of none.
``--root`` imports ``claudeclaw`` from another tree (e.g. an export of main) to compare.
The state directory is on the filesystem of ``--dir`` (default: the temp directory), so
fsync costs what it costs there. The last rows are the pending ledger's journal, which
takes three changes per Discord message: one appended ~1 KB line (on the event loop), and
the ``fdatasync`` of the batch through ``asyncio.to_thread``. The ``registry`` rows are a
session registry write (one new thread recorded, via ``asyncio.to_thread``) with 10, 100
and 1,000 threads in ``sessions.json``: it grows with the registry, which is why the
daemon journals session changes and rewrites the registry at most every 5 s. Nothing here
is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"1 KB": 1024, "50 KB": 50 * 1024}
REGISTRY_SIZES = (10, 100, 1000)  # threads in sessions.json for the registry rows


def document(size: int) -> dict[str, Any]:
    """A pending-ledger-like document of about ``size`` bytes once dumped."""
    messages: dict[str, Any] = {}
    n = 0
    while len(repr(messages)) < size * 0.8:
        messages[str(1_200_000_000_000_000_000 + n)] = {
            "channel": "1100000000000000000",
            "thread": "1100000000000000001",
            "author": "someone",
            "accepted": "2026-12-01T16:00:00.000000Z",
            "state": "queued",
        }
        n += 1
    return {"version": 1, "seq": 0, "messages": messages}


def load_jsonstore(root: Path) -> Any:
    sys.path.insert(0, str(root))
    module = importlib.import_module("claudeclaw.jsonstore")
    assert Path(module.__file__ or "").resolve().is_relative_to(root.resolve()), module.__file__
    return module


def timed(writes: int, step: Callable[[int], Any]) -> tuple[float, float]:
    """Median CPU and wall (ms) of ``step(0..writes-1)``; a step that returns an awaitable
    (``asyncio.to_thread``, the daemon's way) is awaited, all in one event loop."""
    cpu: list[float] = []
    wall: list[float] = []

    async def run() -> None:
        for i in range(writes):
            c0, w0 = time.process_time(), time.perf_counter()
            pending = step(i)
            if pending is not None:
                await pending
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)

    asyncio.run(run())
    return statistics.median(cpu) * 1000, statistics.median(wall) * 1000


def cpu_per_write(
    jsonstore: Any, base: Path, size: int, writes: int, call: str
) -> tuple[float, float]:
    """Median CPU and wall (ms) per write over ``writes`` writes to one path; ``call``:
    ``direct``, ``to_thread``, or ``update_json`` (read, change, write under the lock, as
    the sessions registry does)."""
    directory = Path(tempfile.mkdtemp(prefix="sw-", dir=base))
    path = directory / "state" / "pending.json"
    doc = document(size)
    jsonstore.write_json(path, doc, validate=jsonstore.is_object)  # first write: creates

    def bump(current: dict[str, Any]) -> dict[str, Any]:
        current["seq"] += 1
        return current

    def step(i: int) -> Any:
        doc["seq"] = i
        if call == "to_thread":
            return asyncio.to_thread(jsonstore.write_json, path, doc, validate=jsonstore.is_object)
        if call == "update_json":
            jsonstore.update_json(path, path.parent / ".lock", bump, validate=jsonstore.is_object)
        else:
            jsonstore.write_json(path, doc, validate=jsonstore.is_object)
        return None

    try:
        return timed(writes, step)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def cpu_per_append(base: Path, writes: int, call: str) -> tuple[float, float]:
    """Median CPU and wall (ms) of one journal change: ``append`` (a ~1 KB ledger line, on
    the caller's thread) or ``sync`` (an append then the fdatasync, via to_thread)."""
    from claudeclaw.journal import Journal

    directory = Path(tempfile.mkdtemp(prefix="sw-", dir=base))
    journal = Journal(directory / "state" / "pending.jsonl")
    entry = document(1024)

    def step(i: int) -> Any:
        entry["seq"] = i
        journal.append({"put": entry})
        return asyncio.to_thread(journal.sync) if call == "sync" else None

    try:
        return timed(writes, step)
    finally:
        journal.close()
        shutil.rmtree(directory, ignore_errors=True)


def cpu_per_registry_write(base: Path, sessions: int, writes: int) -> tuple[float, float]:
    """Median CPU and wall (ms) of one session registry write through ``asyncio.to_thread``
    (``SessionRegistry.apply`` of one new session, as the daemon's writer lane does) when
    ``sessions.json`` already holds ``sessions`` threads: what a new thread paid on its
    answer's path before the changes journal, and what the daemon now pays once per
    ``REGISTRY_DELAY_S`` at most."""
    from claudeclaw.paths import ProjectPaths
    from claudeclaw.sessions import SessionRegistry

    paths = ProjectPaths(Path(tempfile.mkdtemp(prefix="sw-", dir=base)))
    registry = SessionRegistry(paths)
    registry.apply([("record", str(10**17 + n), f"session-{n}") for n in range(sessions)])

    def step(i: int) -> Any:
        change = ("record", str(2 * 10**17 + i), f"new-{i}")
        return asyncio.to_thread(registry.apply, [change])

    try:
        return timed(writes, step)
    finally:
        shutil.rmtree(paths.root, ignore_errors=True)


def inner(args: argparse.Namespace) -> None:
    """Child for strace: one warm-up write, then ``--writes`` more."""
    jsonstore = load_jsonstore(Path(args.root))
    base = Path(tempfile.mkdtemp(prefix="sw-", dir=args.dir))
    path = base / "state" / "pending.json"
    doc = document(SIZES[args.inner])
    jsonstore.write_json(path, doc, validate=jsonstore.is_object)
    for i in range(args.writes):
        doc["seq"] = i
        jsonstore.write_json(path, doc, validate=jsonstore.is_object)
    shutil.rmtree(base, ignore_errors=True)


def syscalls(args: argparse.Namespace, size: str, writes: int) -> tuple[int, dict[str, int]]:
    """Total system calls (and per name) of a child doing ``writes`` writes."""
    with tempfile.NamedTemporaryFile(prefix="sw-strace-", dir=args.dir) as out:
        child = [sys.executable, __file__, "--inner", size, "--writes", str(writes)]
        child += ["--root", args.root, "--dir", args.dir]
        subprocess.run(["strace", "-f", "-c", "-o", out.name, *child], check=True)
        text = Path(out.name).read_text()
    per: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and re.fullmatch(r"[\d.]+", fields[0]) and fields[-1] != "total":
            per[fields[-1]] = int(fields[3])
        elif fields and fields[-1] == "total":
            total = int(fields[3])
    return total, per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=300, help="writes per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--strace", action="store_true", help="count system calls per write")
    parser.add_argument("--root", default=str(ROOT), help="tree to import claudeclaw from")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write")
    parser.add_argument("--inner", choices=sorted(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args)
        return
    jsonstore = load_jsonstore(Path(args.root))
    print(f"state write bench: {args.root}, {args.writes} writes x {args.runs} runs, {args.dir}")
    print(f"| {'document':<8} | {'call':<11} | {'CPU ms/write':<22} | {'wall ms/write':<22} |")
    print(f"|{'-' * 10}|{'-' * 13}|{'-' * 24}|{'-' * 24}|")

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):.3f} [{min(xs):.3f}–{max(xs):.3f}]"

    def row(name: str, call: str, runs: list[tuple[float, float]]) -> None:
        cpu, wall = [r[0] for r in runs], [r[1] for r in runs]
        print(f"| {name:<8} | {call:<11} | {fmt(cpu):<22} | {fmt(wall):<22} |")

    for name, size in SIZES.items():
        for call in ("direct", "to_thread", "update_json"):
            row(
                name,
                call,
                [
                    cpu_per_write(jsonstore, Path(args.dir), size, args.writes, call)
                    for _ in range(args.runs)
                ],
            )
    if (Path(args.root) / "claudeclaw" / "journal.py").exists():
        for call in ("append", "sync"):
            runs = [cpu_per_append(Path(args.dir), args.writes, call) for _ in range(args.runs)]
            row("journal", call, runs)
    for sessions in REGISTRY_SIZES:
        runs = [
            cpu_per_registry_write(Path(args.dir), sessions, min(args.writes, 100))
            for _ in range(args.runs)
        ]
        row(f"{sessions} thr", "registry", runs)
    if args.strace:
        n = 200
        for name in SIZES:
            base_total, base_per = syscalls(args, name, 0)
            total, per = syscalls(args, name, n)
            diff = {k: (v - base_per.get(k, 0)) / n for k, v in per.items()}
            top = sorted(((v, k) for k, v in diff.items() if v >= 0.5), reverse=True)
            detail = ", ".join(f"{k} {v:.0f}" for v, k in top)
            print(f"syscalls per write, {name}: {(total - base_total) / n:.1f} ({detail})")


if __name__ == "__main__":
    main()
