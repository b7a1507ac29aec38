"""A run's progress, sampled for the supervisor: the latest event once a second at most.

Claude reports every text block and tool call as it goes, and a worker used to forward
each as a frame: a write here, and a wake-up, a decode and a queue hand-off in the
supervisor, per event (a tool-heavy turn has hundreds). What the supervisor does with them
is show the *current* step in a status message that appears only after
``discord.progressAfterSeconds`` and is edited every few seconds; ``claudeclaw send``
prints the tools it is told of. The latest event once a second tells both the same, and a
turn that ends within its first second (the usual warm answer) sends no progress at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from claudeclaw.model import RunProgress

PROGRESS_EVERY_S = 1.0


class ProgressSampler:
    """Holds a run's newest progress event and sends it at most every ``every`` seconds,
    the first one ``every`` seconds into the run; what is still held at the run's end is
    dropped (its final event says more)."""

    def __init__(self, send: Callable[[RunProgress], None], every: float = PROGRESS_EVERY_S):
        self._send = send
        self.every = every
        self._held: RunProgress | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop time before which nothing more is sent

    def run_started(self) -> None:
        self.run_ended()
        self._due = asyncio.get_running_loop().time() + self.every

    def offer(self, event: RunProgress) -> None:
        self._held = event
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(self._due, self._release)

    def run_ended(self) -> None:
        self._held = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self) -> None:
        self._timer = None
        event, self._held = self._held, None
        if event is not None:
            self._due = asyncio.get_running_loop().time() + self.every
            self._send(event)
