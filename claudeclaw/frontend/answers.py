"""Posting a run's answer on Discord until it is in.

The answer (or the failure note) goes out through :mod:`~claudeclaw.frontend.delivery`;
only once Discord took it does the daemon's pending ledger let the message go
(:meth:`~claudeclaw.api.Dispatcher.delivered`). An answer Discord did not take is posted
again with growing pauses, and after a restart the bot hands over what an earlier run left
(:meth:`AnswerPoster.post_left_over`). An answer Discord will never take (the channel is
gone, the bot lost access) is given up: it stays saved under ``undelivered/``, the ledger
lets it go, and ``discord.answer_undeliverable`` names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

import discord

from claudeclaw.api import Dispatcher
from claudeclaw.frontend.delivery import MAX_REPLY_MESSAGES, ReplyDelivery
from claudeclaw.frontend.follow import DONE, FAILED, KEPT, RunFollower, RunView
from claudeclaw.frontend.render import (
    failure_text,
    render_reply,
    with_context_note,
    without_paths,
)
from claudeclaw.logs import get_logger
from claudeclaw.model import PendingMessage, RunDone, RunFailed, SessionKey
from claudeclaw.redaction import scrub_outbound
from claudeclaw.tasks import TaskSet

log = get_logger(component="discord")

INTERRUPTED = (
    "⚠️ claudeclaw restarted while Claude was working on this, so it did not finish "
    "(it is not run again: its tools may already have acted). Send it again if you still "
    "need it."
)


def crashed_note(exc: BaseException) -> str:
    """What the user reads when posting an answer failed inside claudeclaw itself."""
    return (
        f"claudeclaw could not post this answer: internal error ({type(exc).__name__}). "
        "It stays in Claude's session: ask for it again. The log has the details "
        "(journalctl -u claudeclaw)."
    )


class AnswerPoster:
    """Posts final events as answers; redelivery tasks run in the frontend's ``tasks``."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        delivery: ReplyDelivery,
        follower: RunFollower,
        tasks: TaskSet,
    ) -> None:
        self._dispatcher = dispatcher
        self._delivery = delivery
        self._follower = follower
        self._tasks = tasks
        # pauses before posting again an answer Discord did not take (then every 10 min)
        self.redeliver_delays: tuple[float, ...] = (30.0, 60.0, 120.0, 300.0)
        self.undeliverable = 0  # answers given up since the start (claudeclaw status)

    async def post_answer(
        self,
        message: discord.Message,
        key: SessionKey,
        final: RunDone | RunFailed,
        view: RunView,
        fields: dict[str, Any],
    ) -> None:
        """Post ``final`` as the answer to ``message``, then tell the daemon it is posted
        (its pending ledger keeps it until then, across a restart too)."""
        try:
            posted = await self.post(message, key, final, view, fields)
        except Exception as exc:
            # a bug must not leave the message unanswered (nor, kept in the ledger, fail
            # the same way after every restart): the user gets a note instead
            log.error("discord.answer_crashed", error=repr(exc), exc_info=exc, **fields)
            final = RunFailed(final.msg_id, "error", crashed_note(exc))
            posted = await self.post(message, key, final, view, fields)
        if isinstance(final, RunFailed) and final.reason == "kept":
            return
        if posted:
            self._dispatcher.delivered(final.msg_id)
        elif not await self._given_up(message, final.msg_id, view, fields):
            # saved to disk meanwhile; the ledger keeps it across a restart too
            self._tasks.start(self._post_later(message, key, final, view, fields), "redeliver")

    async def _post_later(
        self,
        message: discord.Message,
        key: SessionKey,
        final: RunDone | RunFailed,
        view: RunView,
        fields: dict[str, Any],
    ) -> None:
        """Try an answer Discord did not take again, with growing pauses, until it is in."""
        for delay in itertools.chain(self.redeliver_delays, itertools.repeat(600.0)):
            await asyncio.sleep(delay)
            log.info("discord.reply_redelivering", **fields)
            if await self.post(message, key, final, view, fields):
                self._dispatcher.delivered(final.msg_id)
                return
            if await self._given_up(message, final.msg_id, view, fields):
                return

    async def _given_up(
        self, message: discord.Message, msg_id: str, view: RunView, fields: dict[str, Any]
    ) -> bool:
        """True when Discord said no attempt can ever post this answer: it stays on disk,
        the ledger lets it go (not tried again after a restart), and the log says where."""
        refusal = self._delivery.take_refusal(message.id)
        if refusal is None:
            return False  # Discord may take it later
        self.undeliverable += 1
        log.warning(
            "discord.answer_undeliverable",
            reason=refusal.reason,
            status=refusal.status,
            code=refusal.code,
            file=str(refusal.path) if refusal.path is not None else None,
            hint="the answer is not posted again; read it in that file",
            **fields,
        )
        self._dispatcher.delivered(msg_id)
        await self._follower.react(message, view, FAILED)  # if the message is still there
        return True

    async def post(
        self,
        message: discord.Message,
        key: SessionKey,
        final: RunDone | RunFailed,
        view: RunView,
        fields: dict[str, Any],
    ) -> bool:
        """Post the answer once; True when it is in Discord (✅ only then)."""
        delivery, follower = self._delivery, self._follower
        if isinstance(final, RunDone) and final.merged_into:
            log.info("discord.run_merged", into=final.merged_into, **fields)
            await follower.react(message, view, DONE)  # the reply to the first one answers it
            return True
        if isinstance(final, RunDone) and final.reply_file:  # too large for a frame
            whole = await delivery.read_spilled_reply(final.reply_file)
            reply = scrub_outbound(whole if whole is not None else final.reply)
            rendered = render_reply(with_context_note(final.reply, final.context_reset))
            log.info("discord.run_done", as_file=True, length=len(reply), **fields)
            delivered = await delivery.deliver_as_file(message, key, reply, rendered.chunks)
            if not delivered:
                return False
            if whole is not None:  # a file of ours (checked when read)
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(Path(final.reply_file).unlink)
            await follower.react(message, view, DONE)
            return True
        if isinstance(final, RunDone):
            reply = scrub_outbound(final.reply)  # a key Claude read must not reach the chat
            images = await delivery.images_to_upload(reply, view.accepted_at)
            if images:
                reply = without_paths(reply, [str(p) for p in images])
            rendered = render_reply(with_context_note(reply, final.context_reset))
            log.info(
                "discord.run_done", chunks=len(rendered.chunks), length=len(final.reply), **fields
            )
            if len(rendered.chunks) > MAX_REPLY_MESSAGES:
                posted = await delivery.deliver_as_file(message, key, reply, rendered.chunks)
            else:
                posted = await delivery.deliver(message, key, rendered.chunks)
            if not posted:
                return False  # no ✅: the answer is not in Discord (yet)
            if images:
                await delivery.upload_images(message, key, images)
            if rendered.reactions:
                follower.add_reaction(message, view, rendered.reactions[0])
            await follower.react(message, view, DONE)
            return True
        log.info("discord.run_failed", reason=final.reason, **fields)
        posted = await delivery.deliver(message, key, [scrub_outbound(failure_text(final))])
        await follower.react(message, view, KEPT if final.reason == "kept" else FAILED)
        return posted

    async def post_left_over(
        self,
        item: PendingMessage,
        message: discord.Message,
        view: RunView,
        fields: dict[str, Any],
    ) -> None:
        """Post what an earlier run of the daemon left for ``item`` (answered, or started):
        its stored answer, or the note that its run was interrupted (it is not run again:
        its tools may have acted)."""
        if item.answer is not None:  # it was answered, but the answer was not posted
            log.info("discord.pending_answer_posted", **fields)
            await self.post_answer(message, item.key, item.answer, view, fields)
            return
        log.info("discord.pending_interrupted", **fields)
        if await self._delivery.deliver(message, item.key, [INTERRUPTED]):
            self._dispatcher.delivered(item.msg_id)
        elif await self._given_up(message, item.msg_id, view, fields):
            return
        # else the next start tells them
        await self._follower.react(message, view, FAILED)


__all__ = ["INTERRUPTED", "AnswerPoster"]
