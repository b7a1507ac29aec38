"""Pure routing: should the bot answer a Discord message, and under which session key?

The bot turns each ``discord.Message`` into :class:`MessageFacts` (plain strings and
flags) and asks :func:`route_message`. Nothing here touches discord.py, so every rule of
the original (its section 3.2) and claudeclaw's fail-closed allowlist is unit-tested.

Rules, in order:

1. Never answer bots (ourselves included) or system messages: only message types
   DEFAULT (0) and REPLY (19) are prompts; "X started a thread" (18) and friends are not.
2. A message must be *for us*: a DM; a mention of the bot (``<@id>``/``<@!id>`` or the
   mention list); a reply to one of our messages; anything in a ``listenChannels`` channel
   or a thread under one; anything in a ``listenGuilds`` guild; anything in a thread that
   already has a session with the bot (``answerInSessionThreads``, on by default).
3. An empty message without attachments is dropped.
4. The author must be allowed: ``allowedUserIds`` (empty: nobody) or ``"*"``. An
   unauthorized DM gets a short refusal; in a guild the message is ignored silently.
5. The key: a thread -> its id; a DM or ordinary channel -> ``global``; with
   ``sessionScope: "channel"`` every guild channel gets its own key (its id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from claudeclaw.config import DiscordSettings
from claudeclaw.model import GLOBAL_KEY, SessionKey, session_key

# Discord message types that carry a user's prompt (everything else is a system notice).
MESSAGE_TYPE_DEFAULT = 0
MESSAGE_TYPE_REPLY = 19
PROMPT_MESSAGE_TYPES = frozenset({MESSAGE_TYPE_DEFAULT, MESSAGE_TYPE_REPLY})

Action = Literal["answer", "refuse", "ignore"]
Trigger = Literal["dm", "mention", "reply", "listen_channel", "listen_guild", "session_thread"]


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What routing needs to know about one message; ids are decimal strings."""

    author_id: str
    author_is_bot: bool
    message_type: int
    content: str
    channel_id: str
    guild_id: str | None = None  # None: a DM
    thread_parent_id: str | None = None  # set when channel_id is a thread
    has_attachments: bool = False
    mentioned_user_ids: tuple[str, ...] = ()
    replied_to_author_id: str | None = None  # author of the referenced message, if any
    thread_has_session: bool = False  # the thread's key has a session, or work queued

    @property
    def is_dm(self) -> bool:
        return self.guild_id is None

    @property
    def is_thread(self) -> bool:
        return self.thread_parent_id is not None


@dataclass(frozen=True, slots=True)
class Route:
    """The decision: ``answer`` (with a key), ``refuse`` (say "Unauthorized.") or ``ignore``."""

    action: Action
    reason: str  # the trigger when answering, else why not (for debug logs)
    key: SessionKey | None = None


def is_authorized(user_id: str, discord: DiscordSettings) -> bool:
    """Fail closed: an empty allowlist lets nobody in; ``"*"`` lets everyone in."""
    return discord.allow_everyone or user_id in discord.allowed_user_ids


def mentions_user(text: str, user_id: str) -> bool:
    """True if ``text`` contains ``<@id>`` or ``<@!id>`` for ``user_id``."""
    return bool(user_id) and re.search(rf"<@!?{re.escape(user_id)}>", text) is not None


def key_for_channel(
    *,
    guild_id: str | None,
    channel_id: str,
    is_thread: bool,
    discord: DiscordSettings,
) -> SessionKey:
    """The session key of a channel (shared by messages and slash commands)."""
    if is_thread:
        return session_key(channel_id)
    if guild_id is not None and discord.session_scope == "channel":
        return session_key(channel_id)
    return GLOBAL_KEY


def trigger_of(facts: MessageFacts, discord: DiscordSettings, bot_user_id: str) -> Trigger | None:
    """Why the message is for us (the first rule that matches), or None."""
    if facts.is_dm:
        return "dm"
    if bot_user_id in facts.mentioned_user_ids or mentions_user(facts.content, bot_user_id):
        return "mention"
    if bot_user_id and facts.replied_to_author_id == bot_user_id:
        return "reply"
    if facts.channel_id in discord.listen_channels:
        return "listen_channel"
    if facts.thread_parent_id is not None and facts.thread_parent_id in discord.listen_channels:
        return "listen_channel"
    if facts.guild_id is not None and facts.guild_id in discord.listen_guilds:
        return "listen_guild"
    if facts.is_thread and facts.thread_has_session and discord.answer_in_session_threads:
        return "session_thread"
    return None


def route_message(facts: MessageFacts, discord: DiscordSettings, bot_user_id: str) -> Route:
    """Decide what to do with one message (see the module docstring for the rules)."""
    if facts.author_is_bot or facts.author_id == bot_user_id:
        return Route("ignore", "bot")
    if facts.message_type not in PROMPT_MESSAGE_TYPES:
        return Route("ignore", f"system_message_type_{facts.message_type}")
    trigger = trigger_of(facts, discord, bot_user_id)
    if trigger is None:
        return Route("ignore", NOT_FOR_US)
    if not strip_mentions(facts.content, bot_user_id).strip() and not facts.has_attachments:
        return Route("ignore", "empty")
    if not is_authorized(facts.author_id, discord):
        return Route("refuse" if facts.is_dm else "ignore", "unauthorized")
    key = key_for_channel(
        guild_id=facts.guild_id,
        channel_id=facts.channel_id,
        is_thread=facts.is_thread,
        discord=discord,
    )
    return Route("answer", trigger, key)


NOT_FOR_US = "not_for_us"


def ignored_hint(route: Route, facts: MessageFacts, discord: DiscordSettings) -> str | None:
    """For an allowlisted user's message we ignore: why, in words they can act on
    (None when there is nothing to explain: bots, system messages, strangers)."""
    if route.action != "ignore" or not is_authorized(facts.author_id, discord):
        return None
    if route.reason == "not_for_us":
        if facts.is_thread and not discord.answer_in_session_threads:
            return (
                "not addressed to the bot: mention it (@bot) in the message; "
                "discord.answerInSessionThreads is off"
            )
        return (
            "not addressed to the bot: mention it (@bot), reply to it, DM it, or list the "
            "channel in discord.listenChannels; in a thread it has answered in, no mention "
            "is needed"
        )
    if route.reason == "empty":
        return "empty message (no text besides the mention, no attachment)"
    return None


def strip_mentions(text: str, bot_user_id: str) -> str:
    """Remove ``<@id>`` / ``<@!id>`` mentions of the bot and NUL characters."""
    text = text.replace("\x00", "")
    if bot_user_id:
        text = re.sub(rf"<@!?{re.escape(bot_user_id)}>", "", text)
    return text.strip()
