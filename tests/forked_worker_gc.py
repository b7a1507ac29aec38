"""A fork server child and its garbage collector, for the test and the bench of it.

``python -m tests.forked_worker_gc`` prepares as the fork server does (the worker's code
imported, ``gc.collect()``, ``gc.freeze()``), forks, and runs ``forkserver._child`` itself,
with a stand-in for ``worker.main`` that reports, as one JSON line: how many objects the
server froze and how many the child still has frozen, and the CPU (ms) and private memory
(MB) of the child's first full collection.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import time

import psutil

from claudeclaw import forkserver, settings_wire, worker


def _report(frozen: int) -> int:
    before = psutil.Process().memory_full_info().uss
    kept = gc.get_freeze_count()
    started = time.process_time()
    gc.collect()
    cpu = time.process_time() - started
    grew = psutil.Process().memory_full_info().uss - before
    figures = {"server_frozen": frozen, "child_frozen": kept, "gc_ms": cpu * 1000}
    print(json.dumps({**figures, "grew_mb": grew / 1e6}), flush=True)
    return 0


def main() -> int:
    settings_wire.prepare()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    worker.main = lambda args: _report(frozen)  # type: ignore[assignment]
    _, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        forkserver._child(theirs, [], dict(os.environ), [])
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    raise SystemExit(main())
