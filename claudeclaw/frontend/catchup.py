"""Catching up on messages sent while the bot was not connected.

The gateway replays what was missed only on a RESUME. After a fresh connect (the daemon
started, or a reconnect Discord could not resume) the bot reads back the recent history
of the channels it serves: the threads and channels with recently used sessions and the
listen channels. Bounded: the last ``CATCH_UP_SECONDS`` and at most ``CATCH_UP_LIMIT``
messages per channel, oldest first.

A message counts as handled, and is skipped, when the bot replied to it or put a reaction
on it (an earlier run of the daemon accepted it: the pending ledger answers for it), or
when this process has already seen its id. Whatever is left goes through the ordinary
intake (routing decides whether it is for the bot), in order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import discord

from claudeclaw.logs import get_logger

log = get_logger(component="discord")

CATCH_UP_SECONDS = 3600.0
CATCH_UP_LIMIT = 50


def _handled_ids(history: list[discord.Message], bot_id: int) -> set[int]:
    """Ids of messages the bot answered (a reply references them) or reacted to."""
    handled: set[int] = set()
    for message in history:
        if message.author.id == bot_id:
            ref = message.reference
            if ref is not None and ref.message_id is not None:
                handled.add(ref.message_id)
        elif any(reaction.me for reaction in message.reactions):
            handled.add(message.id)
    return handled


async def missed_messages(
    client: discord.Client,
    channel_ids: Iterable[int],
    *,
    now: dt.datetime | None = None,
    seconds: float = CATCH_UP_SECONDS,
    limit: int = CATCH_UP_LIMIT,
) -> list[discord.Message]:
    """Messages of other users in ``channel_ids`` from the last ``seconds`` (at most
    ``limit`` per channel) that the bot neither answered nor reacted to, oldest first
    within each channel. A channel that cannot be read is logged and skipped."""
    user = client.user
    if user is None:
        return []
    since = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
    missed: list[discord.Message] = []
    for channel_id in dict.fromkeys(channel_ids):
        try:
            channel = client.get_channel(channel_id) or await client.fetch_channel(channel_id)
            if not isinstance(channel, discord.abc.Messageable):
                continue
            history = [
                message
                async for message in channel.history(limit=limit, after=since, oldest_first=True)
            ]
        except discord.HTTPException as exc:
            log.warning("discord.catch_up_failed", channel_id=channel_id, status=exc.status)
            continue
        handled = _handled_ids(history, user.id)
        missed.extend(
            message
            for message in history
            if message.author.id != user.id and message.id not in handled
        )
    return missed
