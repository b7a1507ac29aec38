"""The fork server's children keep its imported objects frozen.

``gc.freeze()`` in the server keeps the collector away from the objects every worker
shares with it. A child that unfroze them would, at its first full collection, write to
every one of them: ~10 ms of CPU and ~6.5 MB of private copies per worker (measured on
the worker's imports), the memory the fork server exists to share.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import gc, os, socket, sys
from claudeclaw import forkserver, worker

gc.collect()
gc.freeze()
frozen = gc.get_freeze_count()
# the child becomes a "worker" that reports what it kept frozen
worker.main = lambda args: print(frozen, gc.get_freeze_count(), flush=True) or 0
ours, theirs = socket.socketpair()
pid = os.fork()
if pid == 0:
    forkserver._child(theirs, [], dict(os.environ), [])
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_worker_keeps_the_servers_objects_frozen() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    server_frozen, child_frozen = (int(n) for n in done.stdout.split())
    assert server_frozen > 10_000  # the worker's imports
    # (the few it frees as it becomes a worker leave the frozen set: its socket, environ)
    assert child_frozen > server_frozen * 0.99
