"""End-to-end: thread lifecycle (delete, archive, create, rejoin)."""

from __future__ import annotations

import asyncio


async def frontend_idle(frontend):
    """Wait for the frontend's background tasks (but the inbox pruner) to finish."""
    tasks = [t for t in frontend._tasks if "prune" not in t.get_name()]
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)


async def test_deleting_a_thread_resets_its_session(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dispatcher.add_session(fake.thread_id)
    await fake.delete_thread(fake.thread_id)
    await dispatcher.wait_until(lambda: fake.thread_id in dispatcher.resets)
    assert fake.thread_id not in dispatcher.records


async def test_archiving_keeps_the_session_and_the_next_message_resumes_it(
    fake_discord, dispatcher, frontend
):
    fake = fake_discord
    record = dispatcher.add_session(fake.thread_id)
    await fake.archive_thread(fake.thread_id)
    # a later, observable event: deleting another thread resets that one only
    await fake.delete_thread(fake.listen_thread_id)
    await dispatcher.wait_until(lambda: fake.listen_thread_id in dispatcher.resets)
    assert dispatcher.resets == [fake.listen_thread_id]
    # a user writes in the archived thread: Discord unarchives it, the bot answers on the
    # same key, whose session is still there
    await fake.user_says(fake.thread_id, f"<@{fake.bot['id']}> back", mentions=[fake.bot])
    await fake.wait_for_message(fake.thread_id, lambda m: m["content"] == "echo: back")
    assert dispatcher.submissions[-1].key == fake.thread_id
    assert dispatcher.records[fake.thread_id].session_id == record.session_id
    # and it rejoined the thread (it has a session) when it came back
    await fake.wait_until(lambda: fake.bot["id"] in fake.thread_members[fake.thread_id])


async def test_remove_session_on_archive_setting(fake_discord, dispatcher, make_frontend):
    fake = fake_discord
    await make_frontend(remove_session_on_archive=True)
    dispatcher.add_session(fake.thread_id)
    await fake.archive_thread(fake.thread_id)
    await dispatcher.wait_until(lambda: fake.thread_id in dispatcher.resets)
    assert fake.thread_id not in dispatcher.records


async def test_threads_created_under_listen_channels_are_joined(fake_discord, dispatcher, frontend):
    fake = fake_discord
    other = await fake.create_thread(fake.general_id, "not listened")
    listened = await fake.create_thread(fake.listen_id, "listened")
    await fake.wait_until(lambda: fake.bot["id"] in fake.thread_members[listened])
    await fake.user_says(listened, "hello thread")
    await fake.wait_for_message(listened, lambda m: m["content"] == "echo: hello thread")
    assert dispatcher.submissions[-1].key == listened
    assert fake.bot["id"] not in fake.thread_members[other]


async def test_threads_with_sessions_are_rejoined_at_start(fake_discord, dispatcher, make_frontend):
    fake = fake_discord
    dispatcher.add_session(fake.thread_id)
    dispatcher.add_session("42")  # gone: GET /channels/42 is a 404, logged and skipped
    dispatcher.add_session(fake.general_id)  # a channel-scope key: not a thread, not joined
    frontend = await make_frontend()

    def fetched():
        return {r.path.rsplit("/", 1)[-1] for r in fake.requests if r.method == "GET"}

    await fake.wait_until(lambda: {fake.thread_id, "42", fake.general_id} <= fetched())
    await fake.wait_until(lambda: fake.bot["id"] in fake.thread_members[fake.thread_id])
    await frontend_idle(frontend)
    assert fake.bot["id"] not in fake.thread_members[fake.general_id]


async def test_message_in_an_uncached_thread_is_routed_by_fetching_it(
    fake_discord, dispatcher, frontend
):
    fake = fake_discord
    hidden = fake._thread("1234567890123", fake.listen_id, "hidden", fake.alice["id"])
    fake.channels[hidden["id"]] = hidden  # exists on Discord, never announced to the bot
    await fake.user_says(hidden["id"], "hello from nowhere")
    await fake.wait_for_message(hidden["id"])
    assert dispatcher.submissions[-1].key == hidden["id"]


async def test_after_a_mention_a_thread_is_answered_without_one(fake_discord, dispatcher, frontend):
    """Issue 12.4: once the bot has a session in a thread, an allowlisted user just talks
    there; before that, an ignored message is explained once in the log."""
    from structlog.testing import capture_logs

    fake = fake_discord
    with capture_logs() as logs:
        await fake.user_says(fake.thread_id, "no mention yet")
        await fake.user_says(fake.thread_id, "still no mention")
        await fake.user_says(fake.thread_id, f"<@{fake.bot['id']}> first", mentions=[fake.bot])
        await fake.wait_for_message(fake.thread_id, lambda m: m["content"] == "echo: first")
        await fake.user_says(fake.thread_id, "and now without")
        await fake.wait_for_message(
            fake.thread_id, lambda m: m["content"] == "echo: and now without"
        )
    assert [s.key for s in dispatcher.submissions] == [fake.thread_id, fake.thread_id]
    ignored = [e for e in logs if e["event"] == "discord.message_ignored"]
    explained = [e for e in ignored if "hint" in e]
    assert len(ignored) == 2 and len(explained) == 1, ignored  # explained once, not per message
    assert explained[0]["log_level"] == "info" and explained[0]["reason"] == "not_for_us"
    assert "mention it" in explained[0]["hint"]
    # a stranger in the same thread is still ignored, silently
    await fake.user_says(fake.thread_id, "let me in", author=fake.bob)
    await fake.user_says(fake.thread_id, f"<@{fake.bot['id']}> barrier", mentions=[fake.bot])
    await fake.wait_for_message(fake.thread_id, lambda m: m["content"] == "echo: barrier")
    assert all("let me in" not in s.prompt for s in dispatcher.submissions)


async def test_answering_in_session_threads_can_be_turned_off(
    fake_discord, dispatcher, make_frontend
):
    fake = fake_discord
    await make_frontend(answer_in_session_threads=False)
    await fake.user_says(fake.thread_id, f"<@{fake.bot['id']}> first", mentions=[fake.bot])
    await fake.wait_for_message(fake.thread_id, lambda m: m["content"] == "echo: first")
    await fake.user_says(fake.thread_id, "without a mention")
    await fake.user_says(fake.thread_id, f"<@{fake.bot['id']}> barrier", mentions=[fake.bot])
    await fake.wait_for_message(fake.thread_id, lambda m: m["content"] == "echo: barrier")
    assert all("without a mention" not in s.prompt for s in dispatcher.submissions)


async def test_a_reconnect_rejoins_only_recent_threads_and_prunes_old_sessions(
    fake_discord, dispatcher, make_frontend
):
    """50 sessions: one used now, 45 idle for 20 days (their threads are archived by
    Discord by now), 4 idle for 100 days. Result: one REST fetch + join, not 50; the 4
    old sessions are forgotten; the idle ones are kept."""
    import dataclasses
    import datetime as dt

    fake = fake_discord
    dispatcher.add_session(fake.thread_id)
    now = dt.datetime.now(dt.UTC)
    idle = [str(10**17 + n) for n in range(45)]
    old = [str(2 * 10**17 + n) for n in range(4)]
    for keys, days in ((idle, 20), (old, 100)):
        stamp = (now - dt.timedelta(days=days)).isoformat().replace("+00:00", "Z")
        for key in keys:
            record = dispatcher.add_session(key)
            dispatcher.records[key] = dataclasses.replace(record, last_used_at=stamp)
    frontend = await make_frontend()
    await fake.wait_until(lambda: fake.bot["id"] in fake.thread_members[fake.thread_id])
    await dispatcher.wait_until(lambda: len(dispatcher.resets) == 4)
    await frontend_idle(frontend)
    fetched = [r.path for r in fake.requests if r.method == "GET" and "/channels/" in r.path]
    assert [p.rsplit("/", 1)[-1] for p in fetched] == [fake.thread_id]
    assert sorted(dispatcher.resets) == sorted(old)
    assert all(key in dispatcher.records for key in idle)
