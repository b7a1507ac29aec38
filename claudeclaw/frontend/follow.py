"""Following one run on Discord while it works: reactions, typing, "queued", progress.

What the user sees between accepting a message and its answer:

* reactions on the user's message: 👀 accepted but not running yet, ⚙️ running, ↪️ passed
  into the turn already running (``runner.busyPolicy: "steer"``), ⏸️ waiting for a person to
  approve a tool (``security.approvals``) or kept for a restart, ✅ done, ❌ failed (each
  replaces the previous one). A message whose run starts at once (the usual case) shows ⚙️
  first, not 👀 and ⚙️ a few milliseconds apart: two Discord calls fewer per message; one
  that waits (its queue, a slot, downloads) shows 👀 as soon as that is known, and at the
  latest after ``acknowledge_within`` seconds. They are best effort and run in the
  background, in order per message: a slow or rate-limited reaction never holds up a reply;
* each approval request as a message with buttons (``frontend/approvals.py``), edited to
  its outcome;
* "Queued: N ahead of you" at most once per message, only when it is still waiting after
  ``queue_notice_after`` seconds (a short wait needs no notice), and only one notice per
  channel at a time (a burst of messages gets one, not one each); Claude's usage limit is
  said at once, with its reset time;
* the typing indicator while it runs, renewed every ``TYPING_REFRESH_SECONDS`` (Discord
  shows it for ~10 s; discord.py's own context manager renews it every 5 s, 60 % more calls);
* after ``progressAfterSeconds`` one status message with the current tool and elapsed
  time, edited at most every ``progressEditIntervalSeconds`` and deleted at the end.

The answer itself is posted by the bot through ``delivery.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord

from claudeclaw.config import Settings
from claudeclaw.frontend.approvals import ApprovalPrompts
from claudeclaw.frontend.delivery import NO_MENTIONS, ReplyDelivery
from claudeclaw.frontend.render import progress_text, queued_text
from claudeclaw.logs import get_logger
from claudeclaw.model import (
    RunApproval,
    RunApprovalDone,
    RunDone,
    RunEvent,
    RunFailed,
    RunProgress,
    RunQueued,
    RunStarted,
)
from claudeclaw.tasks import TaskSet

log = get_logger(component="discord")

ACCEPTED = "👀"
RUNNING = "⚙️"
DONE = "✅"
FAILED = "❌"
KEPT = "⏸️"  # the daemon is restarting; the message runs when it is back
WAITING = KEPT  # a tool use waits for a person's approval
STEERED = "↪️"  # passed into the turn already running (busyPolicy "steer"); answered with it
QUEUE_NOTICE_AFTER_SECONDS = 10.0  # a message waiting less than this is not told it waits
ACKNOWLEDGE_WITHIN_SECONDS = 0.5  # a message neither running nor queued by then shows 👀
TYPING_REFRESH_SECONDS = 8.0  # Discord's indicator lasts ~10 s: renewed with 2 s to spare


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
    reacting: asyncio.Task[None] | None = None  # the last step of its reaction chain (in_order)
    acknowledging: asyncio.TimerHandle | None = None  # the 👀 due if nothing shows sooner


class RunFollower:
    """Shows a run's progress on Discord; ``settings`` is swapped on reload."""

    def __init__(
        self,
        client: discord.Client,
        settings: Settings,
        delivery: ReplyDelivery,
        approvals: ApprovalPrompts | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.delivery = delivery
        self.tasks = TaskSet("discord-follow")  # reactions, typing
        self.queue_notice_after = QUEUE_NOTICE_AFTER_SECONDS
        self.acknowledge_within = ACKNOWLEDGE_WITHIN_SECONDS
        self._noticed: set[int] = set()  # channels showing a queue notice now
        self.approvals = approvals

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
        running = asyncio.Event()  # started or finished: a queue notice is moot
        helpers: list[asyncio.Task[None]] = []
        said_queued = False
        asked: list[str] = []  # approval requests waiting for a person
        final: RunDone | RunFailed | None = None
        try:
            async for event in stream:
                on_queued()
                if isinstance(event, RunQueued):
                    waits = event.position > 0 or event.waiting_for_slot or event.resets_at
                    if waits and view.reaction is None:  # say it was taken now
                        await self.react(message, view, ACCEPTED)
                    text = queued_text(event.position, event.waiting_for_slot, event.resets_at)
                    if text and not said_queued:
                        said_queued = True
                        if event.resets_at:  # a known long wait: say it now
                            await self.delivery.send_quietly(message.channel, text)
                        else:
                            helpers.append(
                                asyncio.create_task(
                                    self._queue_notice(message.channel, text, running)
                                )
                            )
                elif isinstance(event, RunStarted):
                    running.set()
                    if not view.started:
                        view.started = time.monotonic()
                        await self.react(message, view, STEERED if event.steered else RUNNING)
                        # not a helper: the run's end never waits for its request
                        self.tasks.start(self._typing(message.channel, stop), "typing")
                        helpers.append(
                            asyncio.create_task(self._progress(message.channel, view, stop))
                        )
                elif isinstance(event, RunProgress):
                    if event.tool:
                        view.tool, view.summary, view.writing = event.tool, event.summary, False
                    elif event.text:
                        view.tool, view.summary, view.writing = "", "", True
                elif isinstance(event, RunApproval) and self.approvals is not None:
                    asked.append(event.request_id)
                    await self.approvals.show(message.channel, event)
                    await self.react(message, view, WAITING)
                elif isinstance(event, RunApprovalDone) and self.approvals is not None:
                    await self.approvals.settled(event)
                    if event.request_id in asked:
                        asked.remove(event.request_id)
                        if not asked:
                            await self.react(message, view, RUNNING)
                elif isinstance(event, RunDone | RunFailed):
                    final = event
                    break
        except Exception as exc:
            log.error("discord.run_stream_failed", error=type(exc).__name__, exc_info=exc, **fields)
            final = RunFailed(msg_id="", reason="error", message="claudeclaw lost track of it.")
        finally:
            stop.set()
            running.set()
            _no_acknowledgement(view)  # its outcome is the reaction now
            if helpers:
                await asyncio.gather(*helpers, return_exceptions=True)
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        if final is None:
            final = RunFailed(msg_id="", reason="error", message="The run ended without a result.")
        return final

    async def _queue_notice(
        self, channel: discord.abc.Messageable, text: str, running: asyncio.Event
    ) -> None:
        """Say the message waits, if it still does after ``queue_notice_after`` seconds and
        no other message of this channel is showing a notice; the channel is free again
        once this message runs."""
        if await _wait(running, self.queue_notice_after):
            return
        channel_id = getattr(channel, "id", 0)
        if channel_id in self._noticed:
            return
        self._noticed.add(channel_id)
        try:
            await self.delivery.send_quietly(channel, text)
            await running.wait()
        finally:
            self._noticed.discard(channel_id)

    async def _typing(self, channel: discord.abc.Messageable, stop: asyncio.Event) -> None:
        """The typing indicator until the run ends (``stop``). A request already sent is
        let finish, not cancelled: that would close its keep-alive connection to Discord,
        and the next call would open (and TLS-handshake) a new one. The reply ends the
        indicator anyway."""
        try:
            while not stop.is_set():
                await channel.typing()  # (awaited, not a context: one call, no 5 s loop)
                if await _wait(stop, TYPING_REFRESH_SECONDS):
                    return
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

    def acknowledge(self, message: discord.Message, view: RunView) -> None:
        """Show 👀 on ``message`` in ``acknowledge_within`` seconds unless another status
        reaction (⚙️ when its run starts, 👀 when it is queued) was shown first."""

        def due() -> None:
            view.acknowledging = None
            if view.reaction is None:
                self._show(message, view, ACCEPTED)

        loop = asyncio.get_running_loop()
        view.acknowledging = loop.call_later(self.acknowledge_within, due)

    async def react(self, message: discord.Message, view: RunView, emoji: str) -> None:
        """Show ``emoji`` on the user's message, replacing the previous status reaction.

        Best effort, in the background: returns at once (a failing or rate-limited reaction
        call must never delay a reply); the changes on one message keep their order."""
        self._show(message, view, emoji)

    def _show(self, message: discord.Message, view: RunView, emoji: str) -> None:
        _no_acknowledgement(view)  # a status shows now: no 👀 needed any more
        previous, view.reaction = view.reaction, emoji
        self.in_order(view, lambda: self._set_reaction(message, emoji, previous), "reaction")

    def add_reaction(self, message: discord.Message, view: RunView, emoji: str) -> None:
        """One more reaction (a ``[react:…]`` in the answer), after the status ones."""
        self.in_order(view, lambda: self._set_reaction(message, emoji, None), "reaction")

    def in_order(self, view: RunView, step: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``step`` in the background after the message's earlier reaction work, and
        before its later one (a 👀 queued after it shows once it is done); nothing else
        waits for it."""
        before = view.reacting

        async def after_before() -> None:
            if before is not None and not before.done():
                await asyncio.wait({before})
            await step()

        view.reacting = self.tasks.start(after_before(), name)

    async def _set_reaction(
        self, message: discord.Message, emoji: str, previous: str | None
    ) -> None:
        try:
            await message.add_reaction(emoji)
            if previous is not None and previous != emoji and self.client.user is not None:
                await message.remove_reaction(previous, self.client.user)
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.debug(
                "discord.reaction_failed",
                status=getattr(exc, "status", None),
                error=type(exc).__name__,
                message_id=message.id,
            )


def _no_acknowledgement(view: RunView) -> None:
    """Cancel the 👀 :meth:`RunFollower.acknowledge` has due, if any."""
    if view.acknowledging is not None:
        view.acknowledging.cancel()
        view.acknowledging = None


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True if it is set."""
    try:
        await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        return event.is_set()
    return True
