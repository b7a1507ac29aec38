"""Following one run on Discord while it works: reactions, typing, "queued", progress.

What the user sees between accepting a message and its answer:

* reactions on the user's message: 👀 accepted, ⚙️ running, ↪️ passed into the turn already
  running (``runner.busyPolicy: "steer"``), ✅ done, ❌ failed, ⏸️ kept for a restart (each
  replaces the previous one);
* "Queued: N ahead of you" once when it has to wait;
* the typing indicator while it runs;
* after ``progressAfterSeconds`` one status message with the current tool and elapsed
  time, edited at most every ``progressEditIntervalSeconds`` and deleted at the end.

The answer itself is posted by the bot through ``delivery.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord

from claudeclaw.config import Settings
from claudeclaw.frontend.delivery import NO_MENTIONS, ReplyDelivery
from claudeclaw.frontend.render import progress_text, queued_text
from claudeclaw.logs import get_logger
from claudeclaw.model import RunDone, RunEvent, RunFailed, RunProgress, RunQueued, RunStarted

log = get_logger(component="discord")

ACCEPTED = "👀"
RUNNING = "⚙️"
DONE = "✅"
FAILED = "❌"
KEPT = "⏸️"  # the daemon is restarting; the message runs when it is back
STEERED = "↪️"  # passed into the turn already running (busyPolicy "steer"); answered with it


@dataclass(slots=True)
class RunView:
    """What the user sees of one run while it works."""

    started: float = 0.0
    accepted_at: float = field(default_factory=time.time)  # wall clock: file mtimes compare
    tool: str = ""
    summary: str = ""
    writing: bool = False
    reaction: str | None = None
    status_message: discord.Message | None = None
    status_text: str = ""


class RunFollower:
    """Shows a run's progress on Discord; ``settings`` is swapped on reload."""

    def __init__(self, client: discord.Client, settings: Settings, delivery: ReplyDelivery) -> None:
        self.client = client
        self.settings = settings
        self.delivery = delivery

    async def follow(
        self,
        message: discord.Message,
        stream: AsyncIterator[RunEvent],
        view: RunView,
        fields: dict[str, Any],
        on_queued: Callable[[], None],
    ) -> RunDone | RunFailed:
        """Show ``stream``'s events on ``message`` until the final one, and return it.
        ``on_queued`` is called at each event (the first says it is in its queue)."""
        stop = asyncio.Event()
        helpers: list[asyncio.Task[None]] = []
        said_queued = False
        final: RunDone | RunFailed | None = None
        try:
            async for event in stream:
                on_queued()
                if isinstance(event, RunQueued):
                    text = queued_text(event.position, event.waiting_for_slot, event.resets_at)
                    if text and not said_queued:
                        said_queued = True
                        await self.delivery.send_quietly(message.channel, text)
                elif isinstance(event, RunStarted):
                    if not helpers:
                        view.started = time.monotonic()
                        await self.react(message, view, STEERED if event.steered else RUNNING)
                        helpers.append(asyncio.create_task(self._typing(message.channel, stop)))
                        helpers.append(
                            asyncio.create_task(self._progress(message.channel, view, stop))
                        )
                elif isinstance(event, RunProgress):
                    if event.tool:
                        view.tool, view.summary, view.writing = event.tool, event.summary, False
                    elif event.text:
                        view.tool, view.summary, view.writing = "", "", True
                elif isinstance(event, RunDone | RunFailed):
                    final = event
                    break
        except Exception as exc:
            log.error("discord.run_stream_failed", error=type(exc).__name__, exc_info=exc, **fields)
            final = RunFailed(msg_id="", reason="error", message="claudeclaw lost track of it.")
        finally:
            stop.set()
            if helpers:
                await asyncio.gather(*helpers, return_exceptions=True)
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        if final is None:
            final = RunFailed(msg_id="", reason="error", message="The run ended without a result.")
        return final

    async def _typing(self, channel: discord.abc.Messageable, stop: asyncio.Event) -> None:
        try:
            async with channel.typing():
                await stop.wait()
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.debug("discord.typing_failed", error=type(exc).__name__)

    async def _progress(
        self, channel: discord.abc.Messageable, view: RunView, stop: asyncio.Event
    ) -> None:
        """One status message for long runs, edited in place, deleted at the end."""
        if await _wait(stop, self.settings.discord.progress_after_seconds):
            return
        try:
            while True:
                text = progress_text(
                    tool=view.tool,
                    summary=view.summary,
                    writing=view.writing,
                    elapsed_s=time.monotonic() - view.started,
                )
                try:
                    if view.status_message is None:
                        view.status_message = await channel.send(text, allowed_mentions=NO_MENTIONS)
                    elif text != view.status_text:
                        await view.status_message.edit(content=text, allowed_mentions=NO_MENTIONS)
                    view.status_text = text
                except discord.HTTPException as exc:
                    log.debug("discord.progress_failed", status=exc.status)
                if await _wait(stop, self.settings.discord.progress_edit_interval_seconds):
                    return
        finally:
            if view.status_message is not None:
                with contextlib.suppress(discord.HTTPException):
                    await view.status_message.delete()

    async def react(self, message: discord.Message, view: RunView, emoji: str) -> None:
        """Show ``emoji`` on the user's message, replacing the previous status reaction."""
        previous, view.reaction = view.reaction, emoji
        try:
            await message.add_reaction(emoji)
            if previous is not None and previous != emoji and self.client.user is not None:
                await message.remove_reaction(previous, self.client.user)
        except discord.HTTPException as exc:
            log.debug("discord.reaction_failed", status=exc.status, message_id=message.id)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True if it is set."""
    try:
        await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        return event.is_set()
    return True
