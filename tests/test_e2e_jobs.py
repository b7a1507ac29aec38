"""Jobs and the heartbeat through the whole daemon: the real supervisor (in-process) with
its worker processes running the fake ``claude``, and the real discord.py client talking to
the loopback fake Discord. Driven through the control socket, as ``claudeclaw jobs run`` /
``heartbeat run`` / ``jobs list`` are."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from claudeclaw import control
from claudeclaw.frontend.render import utf16_len
from claudeclaw.model import RunDone, RunStarted, SessionKey
from claudeclaw.paths import ProjectPaths
from claudeclaw.supervisor import Supervisor
from tests.fake_discord import FakeDiscord
from tests.fixtures_daemon import SupervisorStarter, discord_settings, new_supervisor

DaemonFactory = Callable[..., Any]


@pytest.fixture
def jobs_daemon(
    make_project: Callable[..., ProjectPaths],
    fake_discord: FakeDiscord,
    start_supervisor: SupervisorStarter,
) -> DaemonFactory:
    """``await jobs_daemon(jobs={name: text}, state=..., **settings)``: a started daemon."""

    async def start(
        jobs: dict[str, str] | None = None, state: dict[str, Any] | None = None, **overrides: Any
    ) -> Supervisor:
        discord_cfg = discord_settings(fake_discord, listen=False, **overrides.pop("discord", {}))
        paths = make_project(discord=discord_cfg, **overrides)
        paths.jobs_dir.mkdir(parents=True, exist_ok=True)
        for name, text in (jobs or {}).items():
            (paths.jobs_dir / f"{name}.md").write_text(text)
        if state is not None:
            paths.schedule_file.write_text(json.dumps(state))
        return await start_supervisor(paths, discord=True)

    return start


async def run_now(paths: ProjectPaths, message: dict[str, Any]) -> dict[str, Any]:
    async for frame in control.stream(paths, message):
        if frame["type"] == "result":
            return frame
    raise AssertionError("no result")


def posts(fake: FakeDiscord, channel: str, needle: str) -> list[dict[str, Any]]:
    return [m for m in fake.bot_messages(channel) if needle in m.get("content", "")]


async def test_a_due_job_runs_in_its_own_session_and_posts_to_the_notify_channel(
    jobs_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """The job's hour passed while the daemon was down (schedule.json says it last ran
    long ago): at start it runs once as a catch-up, in the session job:report, and its
    result is posted to discord.notifyChannelId, naming the job and pinging nobody."""
    fake = fake_discord
    channel = fake.general_id
    sup = await jobs_daemon(
        jobs={"report": "---\nschedule: 0 * * * *\nrecurring: true\n---\nsummarise @everyone\n"},
        state={
            "jobs": {
                "report": {
                    "armed_at": "2026-01-01T00:00:00+00:00",
                    "last_slot": "2026-01-01T00:00:00+00:00",
                    "schedule": "0 * * * *",
                    "disabled": False,
                }
            }
        },
        discord={"notifyChannelId": channel},
    )
    message = await fake.wait_for_message(
        channel, lambda m: "Job `report`" in m.get("content", ""), timeout=30
    )
    assert message["content"].startswith("🗓️ **Job `report`** · catch-up run\nFAKE-REPLY turn=1")
    assert "summarise @everyone" in message["content"]
    assert fake.sent_payloads[message["id"]]["allowed_mentions"]["parse"] == []
    await sup._writes.flush()  # (the session files are written within REGISTRY_DELAY_S)
    threads = json.loads(sup.paths.thread_sessions_file.read_text())["threads"]
    assert "job:report" in threads
    rows = (await control.request(sup.paths, {"type": "jobs.list"}))["jobs"]
    assert rows[0]["name"] == "report" and rows[0]["last_outcome"] == "ok"
    assert rows[0]["next_run"].endswith("+00:00") and rows[0]["last_run"]
    status = await control.request(sup.paths, {"type": "status"})
    assert status["daemon"]["next_job"]["name"] == "report"
    assert "next job report at" in sup.status_line()
    # a manual run resumes the job's session and prints the reply
    assert sup.jobs is not None
    await sup.jobs.scheduler.idle()  # the catch-up run's bookkeeping is done
    again = await run_now(sup.paths, {"type": "jobs.run", "name": "report"})
    assert again["ok"], again
    assert again["text"].startswith("FAKE-REPLY turn=2")


async def test_heartbeat_ok_is_not_posted_and_anything_else_is(
    jobs_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    channel = fake.general_id
    sup = await jobs_daemon(
        heartbeat={"enabled": True, "interval": 60, "prompt": "hb.txt"},
        discord={"notifyChannelId": channel},
    )
    (sup.paths.root / "hb.txt").write_text("REPLY:HEARTBEAT_OK")
    quiet = await run_now(sup.paths, {"type": "heartbeat.run"})
    assert quiet == {**quiet, "ok": True, "text": "HEARTBEAT_OK"}
    (sup.paths.root / "hb.txt").write_text("REPLY:disk-almost-full")  # re-read each beat
    loud = await run_now(sup.paths, {"type": "heartbeat.run"})
    assert loud["text"] == "disk-almost-full"
    await fake.wait_for_message(channel, lambda m: "Heartbeat" in m.get("content", ""), timeout=20)
    beats = posts(fake, channel, "Heartbeat")
    assert [m["content"] for m in beats] == ["💓 **Heartbeat**\ndisk-almost-full"]
    assert not posts(fake, channel, "HEARTBEAT_OK")
    # the heartbeat runs in the global session, like the original
    await sup._writes.flush()  # (turn counts reach the disk a few seconds later)
    assert json.loads(sup.paths.global_session_file.read_text())["turnCount"] == 2


async def test_a_job_file_with_an_error_is_reported_and_the_others_still_run(
    jobs_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    sup = await jobs_daemon(
        jobs={
            "broken": "---\nschedule: every morning\n---\nhello\n",
            "fine": "---\nschedule: 0 9 * * *\nnotify: error\n---\nhello\n",
        }
    )
    rows = {r["name"]: r for r in (await control.request(sup.paths, {"type": "jobs.list"}))["jobs"]}
    assert rows["broken"]["last_outcome"] == "invalid"
    assert "invalid cron expression 'every morning'" in rows["broken"]["error"]
    assert rows["fine"]["next_run"] and rows["fine"]["error"] == ""
    bad = await run_now(sup.paths, {"type": "jobs.run", "name": "broken"})
    assert not bad["ok"] and "its file has an error" in bad["text"]
    ok = await run_now(sup.paths, {"type": "jobs.run", "name": "fine"})
    assert ok["ok"]
    # notify: error → a success is not posted (DMs are the default target)
    dm = fake_discord.dm_channel(fake_discord.alice)
    assert sup.jobs is not None and sup.jobs.outbox.items == []
    assert not posts(fake_discord, dm, "Job `fine`")
    # a file added while running is picked up (a cheap mtime check), no restart
    (sup.paths.jobs_dir / "later.md").write_text("---\nschedule: @daily\n---\nhi\n")
    names = [r["name"] for r in (await control.request(sup.paths, {"type": "jobs.list"}))["jobs"]]
    assert "later" in names


async def test_results_go_to_allowlisted_dms_by_default_and_wait_while_discord_fails(
    jobs_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    sup = await jobs_daemon(jobs={"ping": "---\nschedule: @hourly\n---\nping\n"})
    dm = fake.dm_channel(fake.alice)
    fake.fail_posts[dm] = 503  # Discord is having a bad day
    result = await run_now(sup.paths, {"type": "jobs.run", "name": "ping"})
    assert result["ok"]
    assert sup.jobs is not None
    await fake.wait_until(lambda: sup.paths.outbox_notices_file.exists(), timeout=10)
    kept = json.loads(sup.paths.outbox_notices_file.read_text())
    assert [n["job_name"] for n in kept] == ["ping"]
    del fake.fail_posts[dm]
    sup.jobs.outbox.kick()  # (the outbox also retries every minute and on reconnect)
    message = await fake.wait_for_message(
        dm, lambda m: "Job `ping`" in m.get("content", ""), timeout=20
    )
    assert "FAKE-REPLY" in message["content"]
    await fake.wait_until(lambda: not sup.jobs.outbox.items, timeout=10)  # type: ignore[union-attr]
    await sup.jobs.outbox.flush()  # (its lock) the flush that emptied the queue saved it
    assert json.loads(sup.paths.outbox_notices_file.read_text()) == []


async def test_a_jobs_own_model_reaches_claude_for_its_runs_only(
    jobs_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    sup = await jobs_daemon(
        jobs={"argv": "---\nschedule: @daily\nmodel: haiku\ntimeout: 120\n---\nECHO_ARGV\n"},
        model="sonnet",
    )
    result = await run_now(sup.paths, {"type": "jobs.run", "name": "argv"})
    argv = json.loads(result["text"])
    assert argv[argv.index("--model") + 1] == "haiku"
    chat = [
        e
        async for e in sup.submit(SessionKey("global"), "ECHO_ARGV", origin="cli")
        if isinstance(e, RunDone)
    ]
    chat_argv = json.loads(chat[0].reply)
    assert chat_argv[chat_argv.index("--model") + 1] == "sonnet"


async def test_the_originals_inert_keys_are_announced_at_start(
    make_project: Callable[..., ProjectPaths],
) -> None:
    paths = make_project(telegram={"token": "123:abc"}, agentic={"enabled": True})
    sup = new_supervisor(paths)
    with capture_logs() as logs:
        await sup.startup()
        await sup.shutdown()
    inert = [e["detail"] for e in logs if e["event"] == "settings.upstream_key_inert"]
    assert [d.split(":")[0] for d in inert] == ["telegram.token", "agentic.enabled"]


async def test_a_long_result_is_attached_and_a_bad_notify_channel_is_saved_not_retried(
    jobs_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    channel = fake.general_id
    sup = await jobs_daemon(
        jobs={"long": "---\nschedule: @daily\n---\nBIGLINE:30000\n"},
        discord={"notifyChannelId": channel},
    )
    await run_now(sup.paths, {"type": "jobs.run", "name": "long"})
    message = await fake.wait_for_message(
        channel, lambda m: "Job `long`" in m.get("content", ""), timeout=20
    )
    assert len(message["content"]) <= 2000 and "attached" in message["content"]
    files = fake.sent_payloads[message["id"]]["_files"]
    assert [f["name"] for f in files] == ["reply.md"] and files[0]["size"] > 30000
    # one message (after the "started" notice), not fifteen
    contents = [m["content"] for m in fake.bot_messages(channel)]
    assert len(contents) == 2 and contents[0].startswith("▶️ claudeclaw")

    # a channel that does not exist: the notice is saved to disk and dropped from the queue
    settings = json.loads(sup.paths.settings_file.read_text())
    settings["discord"]["notifyChannelId"] = "999999999999999999"
    sup.paths.settings_file.write_text(json.dumps(settings))
    assert (await sup.reload())[0]
    await run_now(sup.paths, {"type": "jobs.run", "name": "long"})
    assert sup.jobs is not None
    await fake.wait_until(lambda: not sup.jobs.outbox.items, timeout=10)  # type: ignore[union-attr]
    saved = list(sup.paths.undelivered_dir.glob("notice-*.md"))
    assert len(saved) == 1
    text = saved[0].read_text()
    assert "999999999999999999" in text and "Job `long`" in text


async def test_a_long_result_of_wide_characters_is_attached_within_discords_limit(
    jobs_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """Discord counts UTF-16 units: the start of a long result made of emoji (two units
    each) plus the "attached" note must stay within 2000 of them, or Discord refuses it
    (400) and the notice would block the outbox."""
    fake = fake_discord
    channel = fake.general_id
    sup = await jobs_daemon(
        jobs={"wide": "---\nschedule: @daily\n---\n" + "\U0001f600 " * 9000 + "\n"},
        discord={"notifyChannelId": channel},
    )
    assert (await run_now(sup.paths, {"type": "jobs.run", "name": "wide"}))["ok"]
    message = await fake.wait_for_message(
        channel, lambda m: "Job `wide`" in m.get("content", ""), timeout=20
    )
    assert utf16_len(message["content"]) <= 2000 and "attached" in message["content"]
    files = fake.sent_payloads[message["id"]]["_files"]
    assert [f["name"] for f in files] == ["reply.md"]


async def test_a_notice_discord_refuses_with_a_4xx_is_kept_on_disk_not_retried(
    jobs_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """Discord answers a notice 400 (a bad request fails the same way every time): it is
    saved under undelivered/ and leaves the outbox at once, so the next notice is posted
    (before, it was retried every minute at the head of the outbox, holding the rest)."""
    fake = fake_discord
    channel = fake.general_id
    sup = await jobs_daemon(
        jobs={
            "first": "---\nschedule: @daily\n---\nfirst job\n",
            "second": "---\nschedule: @daily\n---\nsecond job\n",
        },
        discord={"notifyChannelId": channel},
    )
    assert sup.jobs is not None
    await fake.wait_until(lambda: not sup.jobs.outbox.items, timeout=20)  # type: ignore[union-attr]
    fake.fail_posts[channel] = 400
    assert (await run_now(sup.paths, {"type": "jobs.run", "name": "first"}))["ok"]
    await fake.wait_until(lambda: not sup.jobs.outbox.items, timeout=20)  # type: ignore[union-attr]
    saved = list(sup.paths.undelivered_dir.glob("notice-*.md"))
    assert len(saved) == 1 and "400" in saved[0].read_text()
    del fake.fail_posts[channel]
    assert (await run_now(sup.paths, {"type": "jobs.run", "name": "second"}))["ok"]
    await fake.wait_for_message(channel, lambda m: "Job `second`" in m["content"], timeout=20)
    assert not [m for m in fake.bot_messages(channel) if "Job `first`" in m["content"]]


async def test_a_job_runs_in_parallel_with_a_chat_in_its_own_worker(
    jobs_daemon: DaemonFactory, fake_discord: FakeDiscord, fake_claude_env: dict[str, str]
) -> None:
    """The job's claude waits at a gate that opens only after the chat is answered, so the
    chat can only finish first if the two run at once (no race against a sleep)."""
    sup = await jobs_daemon(jobs={"slow": "---\nschedule: @daily\n---\nAWAIT:go slow job\n"})
    started: dict[str, asyncio.Event] = {"job:slow": asyncio.Event(), "global": asyncio.Event()}
    ended: list[str] = []
    assert sup.pool is not None
    original = sup.pool.on_event

    def on_event(key: SessionKey, event: Any) -> None:
        if isinstance(event, RunStarted) and key in started:
            started[key].set()
        elif isinstance(event, RunDone) and key in started:
            ended.append(key)
        original(key, event)

    sup.pool.on_event = on_event
    job = asyncio.ensure_future(run_now(sup.paths, {"type": "jobs.run", "name": "slow"}))
    await asyncio.wait_for(started["job:slow"].wait(), 20)
    chat = [e async for e in sup.submit(SessionKey("global"), "SLEEP:0.1 hi", origin="cli")]
    assert isinstance(chat[-1], RunDone)
    assert ended == ["global"]  # the chat finished while the job was still running
    (Path(fake_claude_env["FAKE_CLAUDE_STATE"]) / "go").touch()  # let the job finish
    assert (await job)["ok"]
    assert ended == ["global", "job:slow"]
    workers = {w.key for w in sup.pool.status()}
    assert {"job:slow", "global"} <= workers
