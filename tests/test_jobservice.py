"""jobservice.py and notices.py with a fake daemon: what is posted, what is kept."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from claudeclaw.config import DiscordSettings, Settings
from claudeclaw.jobfiles import parse_job
from claudeclaw.jobservice import JobService, next_due_text
from claudeclaw.model import RunDone, RunEvent, RunFailed, SessionKey
from claudeclaw.notices import Notice, NoticeOutbox
from claudeclaw.paths import ProjectPaths

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class Host:
    def __init__(self) -> None:
        self.calls: list[tuple[SessionKey, str, str, dict[str, Any] | None]] = []
        self.reply: RunEvent = RunDone("m", "all good", "sid")
        self.limit: datetime | None = None

    async def submit(
        self,
        key: SessionKey,
        prompt: str,
        *,
        origin: str = "discord",
        overrides: dict[str, Any] | None = None,
    ) -> AsyncIterator[RunEvent]:
        self.calls.append((key, prompt, origin, overrides))
        yield self.reply

    def rate_limit_holds(self) -> datetime | None:
        return self.limit


class Sink:
    def __init__(self) -> None:
        self.posted: list[Notice] = []
        self.fail = False

    async def post_notice(self, notice: Notice) -> bool:
        if self.fail:
            return False
        self.posted.append(notice)
        return True


def _service(tmp_path: Path, host: Host, sink: Sink | None, token: str = "t" * 30) -> JobService:
    settings = Settings(discord=DiscordSettings(token=token))
    return JobService(host, ProjectPaths(tmp_path), settings, sink=lambda: sink, clock=lambda: NOW)


def _job(front: str) -> Any:
    return parse_job("j", f"---\n{front}\n---\nrun it\n", Path("j.md"))


async def test_job_prompt_has_the_clock_line_session_key_and_overrides(tmp_path: Path) -> None:
    host, sink = Host(), Sink()
    service = _service(tmp_path, host, sink)
    job = _job("schedule: @daily\nmodel: haiku\ntimeout: 90\nlabel: Daily")
    outcome = await service._run_job(job, "run it", "schedule")
    assert outcome.ok
    key, prompt, origin, overrides = host.calls[0]
    assert (key, origin, overrides) == ("job:j", "job", {"model": "haiku", "timeout_s": 90.0})
    assert prompt == "[2026-03-02 08:00:00 UTC+0]\nrun it"
    await service.outbox.flush()
    assert [n.text for n in sink.posted] == ["🗓️ **Job `j`** (Daily)\nall good"]
    assert sink.posted[0].job_name == "j"


@pytest.mark.parametrize(
    ("notify", "ok", "posted"),
    [("true", True, 1), ("false", False, 0), ("error", True, 0), ("error", False, 1)],
)
async def test_notify_modes(tmp_path: Path, notify: str, ok: bool, posted: int) -> None:
    host, sink = Host(), Sink()
    if not ok:
        host.reply = RunFailed("m", "timeout", "too slow")
    service = _service(tmp_path, host, sink)
    await service._run_job(_job(f"schedule: @daily\nnotify: {notify}"), "run it", "schedule")
    await service.outbox.flush()
    assert len(sink.posted) == posted
    if posted and not ok:
        assert sink.posted[0].text.startswith("🗓️ **Job `j`** failed\n⏱️ Timed out")


async def test_heartbeat_ok_is_silent_and_runs_in_the_global_session(tmp_path: Path) -> None:
    host, sink = Host(), Sink()
    host.reply = RunDone("m", "HEARTBEAT_OK", "sid")
    service = _service(tmp_path, host, sink)
    await service._run_heartbeat("beat", "schedule")
    assert host.calls[0][0] == "global" and host.calls[0][2] == "heartbeat"
    await service.outbox.flush()
    assert sink.posted == []
    host.reply = RunDone("m", "The nightly build failed.", "sid")
    await service._run_heartbeat("beat", "schedule")
    await service.outbox.flush()
    assert [n.text for n in sink.posted] == ["💓 **Heartbeat**\nThe nightly build failed."]


async def test_a_stop_interrupting_a_job_posts_nothing(tmp_path: Path) -> None:
    host, sink = Host(), Sink()
    host.reply = RunFailed("m", "shutdown", "stopping")
    service = _service(tmp_path, host, sink)
    await service._run_job(_job("schedule: @daily"), "run it", "schedule")
    assert service.outbox.items == []


async def test_usage_limit_notice_once_per_pause(tmp_path: Path) -> None:
    host, sink = Host(), Sink()
    service = _service(tmp_path, host, sink)
    until = NOW + timedelta(hours=2)
    service.note_usage_limit(until)
    service.note_usage_limit(until)  # the same pause: said once
    service.note_usage_limit(None)
    for task in list(service._tasks):
        await task
    assert [n.kind for n in service.outbox.items] == ["limit"]
    assert "wait until 2026-03-02 10:00 (UTC)" in service.outbox.items[0].text


async def test_without_a_token_notices_are_logged_not_kept(tmp_path: Path) -> None:
    host = Host()
    service = _service(tmp_path, host, None, token="")
    await service._run_job(_job("schedule: @daily"), "run it", "schedule")
    assert service.outbox.items == []
    assert not ProjectPaths(tmp_path).outbox_notices_file.exists()


async def test_outbox_keeps_order_across_failures_and_restarts(tmp_path: Path) -> None:
    path = tmp_path / "notices.json"
    sink = Sink()
    sink.fail = True
    outbox = NoticeOutbox(path, lambda: sink)
    for text in ("one", "two"):
        await outbox.add(Notice("job", text))
    assert await outbox.flush() == 0
    assert [n["text"] for n in json.loads(path.read_text())] == ["one", "two"]
    # the daemon restarts; Discord is back
    again = NoticeOutbox(path, lambda: sink)
    await again.load()
    sink.fail = False
    assert await again.flush() == 2
    assert [n.text for n in sink.posted] == ["one", "two"]
    assert json.loads(path.read_text()) == []


async def test_outbox_waits_while_there_is_no_sink(tmp_path: Path) -> None:
    outbox = NoticeOutbox(tmp_path / "n.json", lambda: None)
    await outbox.add(Notice("lifecycle", "hi"))
    assert await outbox.flush() == 0 and len(outbox.items) == 1


def test_next_due_text(tmp_path: Path) -> None:
    host = Host()
    service = _service(tmp_path, host, None)
    assert next_due_text(None) == ""
    assert next_due_text(service) == ""
    service.settings = replace(service.settings)
    service.scheduler.jobs = {"j": _job("schedule: 0 9 * * *\nrecurring: true")}
    assert next_due_text(service) == "next job j at 2026-03-02 09:00"
