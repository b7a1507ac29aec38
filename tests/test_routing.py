"""routing.py: which messages get an answer, who may ask, and which key."""

from __future__ import annotations

from dataclasses import replace

import pytest

from claudeclaw.config import DiscordSettings
from claudeclaw.frontend.routing import (
    MessageFacts,
    ignored_hint,
    is_authorized,
    key_for_channel,
    route_message,
    strip_mentions,
)
from claudeclaw.model import GLOBAL_KEY

BOT = "900"
ALICE = "100"
GUILD = "500"
GENERAL = "600"
LISTEN = "700"
THREAD = "800"

SETTINGS = DiscordSettings(allowed_user_ids=(ALICE,), listen_channels=(LISTEN,), listen_guilds=())


def facts(**kw) -> MessageFacts:
    base = MessageFacts(
        author_id=ALICE,
        author_is_bot=False,
        message_type=0,
        content="hello",
        channel_id=GENERAL,
        guild_id=GUILD,
    )
    return replace(base, **kw)


def test_dm_is_answered_on_global():
    route = route_message(facts(guild_id=None, channel_id="42"), SETTINGS, BOT)
    assert (route.action, route.reason, route.key) == ("answer", "dm", GLOBAL_KEY)


def test_plain_guild_message_is_ignored():
    assert route_message(facts(), SETTINGS, BOT).action == "ignore"


@pytest.mark.parametrize(
    ("kw", "trigger"),
    [
        ({"content": f"<@{BOT}> hi"}, "mention"),
        ({"content": f"<@!{BOT}> hi"}, "mention"),
        ({"mentioned_user_ids": (BOT,)}, "mention"),
        ({"replied_to_author_id": BOT, "message_type": 19}, "reply"),
        ({"channel_id": LISTEN}, "listen_channel"),
        ({"channel_id": THREAD, "thread_parent_id": LISTEN}, "listen_channel"),
    ],
)
def test_triggers(kw, trigger):
    route = route_message(facts(**kw), SETTINGS, BOT)
    assert route.action == "answer"
    assert route.reason == trigger


def test_listen_guild_answers_everything_in_it():
    settings = replace(SETTINGS, listen_guilds=(GUILD,))
    assert route_message(facts(), settings, BOT).reason == "listen_guild"


def test_reply_to_someone_else_is_not_a_trigger():
    assert route_message(facts(replied_to_author_id="123"), SETTINGS, BOT).action == "ignore"


@pytest.mark.parametrize("kw", [{"author_is_bot": True}, {"author_id": BOT}])
def test_bots_are_never_answered(kw):
    assert route_message(facts(guild_id=None, **kw), SETTINGS, BOT).reason == "bot"


@pytest.mark.parametrize("message_type", [1, 6, 7, 18, 21, 46])
def test_system_messages_are_not_prompts(message_type):
    route = route_message(facts(channel_id=LISTEN, message_type=message_type), SETTINGS, BOT)
    assert route.action == "ignore"
    assert route.reason.startswith("system_message")


def test_reply_type_counts():
    assert route_message(facts(channel_id=LISTEN, message_type=19), SETTINGS, BOT).action == (
        "answer"
    )


def test_empty_without_attachments_is_ignored_but_attachment_only_is_answered():
    assert route_message(facts(channel_id=LISTEN, content=""), SETTINGS, BOT).reason == "empty"
    assert route_message(facts(content=f"<@{BOT}>"), SETTINGS, BOT).reason == "empty"
    route = route_message(facts(channel_id=LISTEN, content="", has_attachments=True), SETTINGS, BOT)
    assert route.action == "answer"


def test_allowlist_fails_closed():
    empty = DiscordSettings()
    assert not is_authorized(ALICE, empty)
    assert route_message(facts(guild_id=None), empty, BOT).action == "refuse"
    assert (
        route_message(
            facts(channel_id=LISTEN), replace(empty, listen_channels=(LISTEN,)), BOT
        ).action
        == "ignore"
    )
    assert is_authorized("anyone", DiscordSettings(allow_everyone=True))


def test_unauthorized_dm_refused_guild_ignored():
    dm = route_message(facts(guild_id=None, author_id="666"), SETTINGS, BOT)
    assert (dm.action, dm.reason) == ("refuse", "unauthorized")
    guild = route_message(facts(channel_id=LISTEN, author_id="666"), SETTINGS, BOT)
    assert (guild.action, guild.reason) == ("ignore", "unauthorized")


def test_keys():
    assert route_message(facts(channel_id=LISTEN), SETTINGS, BOT).key == GLOBAL_KEY
    thread = route_message(
        facts(channel_id=THREAD, thread_parent_id=GENERAL, content=f"<@{BOT}> x"), SETTINGS, BOT
    )
    assert thread.key == THREAD
    per_channel = replace(SETTINGS, session_scope="channel")
    assert route_message(facts(channel_id=LISTEN), per_channel, BOT).key == LISTEN
    assert route_message(facts(guild_id=None, channel_id="42"), per_channel, BOT).key == (
        GLOBAL_KEY
    )
    assert (
        key_for_channel(guild_id=GUILD, channel_id=THREAD, is_thread=True, discord=per_channel)
        == THREAD
    )


def test_strip_mentions():
    assert strip_mentions(f"<@{BOT}> do <@!{BOT}>it\x00 <@123>", BOT) == "do it <@123>"


# ---- issue 12.4: the first message ------------------------------------------------------


def test_a_thread_with_a_session_needs_no_mention():
    in_thread = facts(channel_id=THREAD, thread_parent_id=GENERAL)
    assert route_message(in_thread, SETTINGS, BOT).reason == "not_for_us"
    route = route_message(replace(in_thread, thread_has_session=True), SETTINGS, BOT)
    assert (route.action, route.reason, route.key) == ("answer", "session_thread", THREAD)
    # strangers are still ignored there, and a setting turns it off
    stranger = replace(in_thread, thread_has_session=True, author_id="666")
    assert route_message(stranger, SETTINGS, BOT).action == "ignore"
    off = replace(SETTINGS, answer_in_session_threads=False)
    route = route_message(replace(in_thread, thread_has_session=True), off, BOT)
    assert route.action == "ignore"
    # not a thread: the global session does not make a channel "for us"
    assert route_message(replace(facts(), thread_has_session=True), SETTINGS, BOT).action == (
        "ignore"
    )


def test_ignored_messages_of_allowlisted_users_are_explained():
    plain = facts()
    route = route_message(plain, SETTINGS, BOT)
    hint = ignored_hint(route, plain, SETTINGS)
    assert hint is not None and "mention it" in hint and "listenChannels" in hint
    empty = facts(content=f"<@{BOT}>")
    assert "empty" in (ignored_hint(route_message(empty, SETTINGS, BOT), empty, SETTINGS) or "")
    stranger = facts(author_id="666")
    assert ignored_hint(route_message(stranger, SETTINGS, BOT), stranger, SETTINGS) is None
    bot = facts(author_is_bot=True)
    assert ignored_hint(route_message(bot, SETTINGS, BOT), bot, SETTINGS) is None
