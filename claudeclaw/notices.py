"""Messages the bot starts (job and heartbeat results, usage-limit and start/stop notices),
kept until Discord has taken them.

A notice goes into ``notices.json`` (0600, atomic) before anyone tries to post it, and
leaves it only once the frontend says it was delivered (or could never be: then the
frontend saved it under ``undelivered/``). While Discord is unreachable, or before the bot
is connected, notices wait and are posted in order when it is back. Nothing here knows
Discord: the frontend implements :class:`NoticeSink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from claudeclaw import jsonstore
from claudeclaw.errors import ClaudeclawError
from claudeclaw.logs import get_logger
from claudeclaw.sessions import utc_now_iso

log = get_logger()

NoticeKind = Literal["job", "heartbeat", "limit", "lifecycle"]
RETRY_INTERVAL_S = 60.0
MAX_KEPT = (
    500  # the oldest are dropped (and logged) beyond this: a dead token must not fill the disk
)


@dataclass(slots=True)
class Notice:
    """One message for the notify channel (or the allowlisted users' DMs)."""

    kind: NoticeKind
    text: str  # Markdown; the sink redacts, splits and never pings
    job_name: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = field(default_factory=utc_now_iso)
    delivered_to: list[str] = field(default_factory=list)  # DM recipients already done

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Notice:
        kind = str(data.get("kind", "job"))
        if kind not in ("job", "heartbeat", "limit", "lifecycle"):
            kind = "job"
        return cls(
            kind=kind,  # type: ignore[arg-type]
            text=str(data["text"]),
            job_name=str(data.get("job_name", "")),
            id=str(data.get("id") or uuid.uuid4().hex[:12]),
            created_at=str(data.get("created_at", "")),
            delivered_to=[str(x) for x in data.get("delivered_to", [])],
        )


class NoticeSink(Protocol):
    """Posts notices (the Discord frontend)."""

    async def post_notice(self, notice: Notice) -> bool:
        """True: done with it (posted, or saved as undeliverable); False: try again later
        (``notice.delivered_to`` may have grown)."""
        ...


class NoticeOutbox:
    """The queue of notices, on disk, flushed to the current sink in order."""

    def __init__(self, path: Path, sink: Callable[[], NoticeSink | None]) -> None:
        self.path = path
        self.sink = sink
        self.items: list[Notice] = []
        self._kick = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.retry_interval_s = RETRY_INTERVAL_S

    async def load(self) -> None:
        try:
            data = await asyncio.to_thread(jsonstore.read_json, self.path)
        except ClaudeclawError as exc:
            log.error("notices.unreadable", file=str(self.path), error=str(exc))
            return
        for entry in data if isinstance(data, list) else []:
            try:
                self.items.append(Notice.from_json(entry))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("notices.entry_skipped", error=str(exc))
        if self.items:
            log.info("notices.recovered", count=len(self.items))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="notices")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def add(self, notice: Notice) -> None:
        """Keep ``notice`` (on disk first), then try to post it."""
        self.items.append(notice)
        if len(self.items) > MAX_KEPT:
            dropped = self.items[: len(self.items) - MAX_KEPT]
            del self.items[: len(dropped)]
            log.error("notices.dropped", count=len(dropped), hint="Discord unreachable for long")
        await self._save()
        log.info("notice.queued", kind=notice.kind, notice_id=notice.id, job_name=notice.job_name)
        self.kick()

    def kick(self) -> None:
        """Try to post now (a notice was added, or the bot (re)connected)."""
        self._kick.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.retry_interval_s)
            self._kick.clear()
            if self.items:
                await self.flush()

    async def flush(self) -> int:
        """Post what waits, oldest first, until one fails; returns how many were done."""
        async with self._flush_lock:
            sink = self.sink()
            done = 0
            while self.items and sink is not None:
                notice = self.items[0]
                before = list(notice.delivered_to)
                try:
                    ok = await sink.post_notice(notice)
                except Exception as exc:  # a bug in posting must not lose the queue
                    log.error("notice.post_crashed", notice_id=notice.id, error=repr(exc))
                    ok = False
                if not ok:
                    if notice.delivered_to != before:
                        await self._save()
                    break
                self.items.pop(0)
                done += 1
                log.info(
                    "notice.posted", kind=notice.kind, notice_id=notice.id, job_name=notice.job_name
                )
            if done:
                await self._save()
            return done

    async def _save(self) -> None:
        document = [n.to_json() for n in self.items]
        try:
            await asyncio.to_thread(jsonstore.write_json, self.path, document)
        except (OSError, ClaudeclawError) as exc:
            log.error("notices.write_failed", error=str(exc))
