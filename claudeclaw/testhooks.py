"""Control requests that exist only for tests (``CLAUDECLAW_TEST_HOOKS=1``).

The production request table (``control_requests.py``) has none of these; the supervisor
imports this module and installs them only when the switch is set in its environment,
which only the test harnesses do (the systemd container tests). The switch never reaches workers or
``claude`` (it is stripped from their environment).
"""

from __future__ import annotations

import time

from claudeclaw import ipc
from claudeclaw.control_requests import ControlRequests
from claudeclaw.logs import get_logger

log = get_logger()


def install(requests: ControlRequests) -> None:
    """Add the test-only requests to ``requests``."""
    requests.add("debug.hang", _hang)


async def _hang(request: ipc.Message, channel: ipc.Channel) -> None:
    """Block the event loop, so a test can watch the systemd watchdog act."""
    seconds = float(request.get("seconds", 3600))
    await channel.send({"type": "result", "message": f"blocking the loop {seconds}s"})
    log.warning("daemon.debug_hang", seconds=seconds)
    time.sleep(seconds)  # noqa: ASYNC251 - deliberately blocks the loop for the watchdog test
