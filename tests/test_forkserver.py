"""The fork server's children keep its imported objects frozen.

``gc.freeze()`` in the server keeps the collector away from the objects every worker
shares with it. A child that unfroze them would, at its first full collection, write to
every one of them: ~10 ms of CPU and ~6.5 MB of private copies per worker (measured on
the worker's imports), the memory the fork server exists to share.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_forked_worker_keeps_the_servers_objects_frozen() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.forked_worker_gc"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["server_frozen"] > 10_000  # the worker's imports
    # (the few it frees as it becomes a worker leave the frozen set: its socket, environ)
    assert figures["child_frozen"] > figures["server_frozen"] * 0.99
