"""Tool approvals on Discord (``security.approvals``): the request message and its buttons.

Each :class:`~claudeclaw.model.RunApproval` of a run becomes one message in the run's
channel (thread or DM): the tool, a short redacted summary of its input, and buttons
**Allow**, **Allow for this session**, **Deny** (message components: no extra bot
permission). For ``AskUserQuestion`` the buttons are the question's options. Only
allowlisted users may press (anyone else gets an ephemeral refusal); the message is edited
to the decision and who made it, or to "nobody answered" / "claudeclaw restarted".

Presses arrive as component interactions (``on_interaction``); the buttons' ``custom_id``
is ``claudeclaw:ap:<request id>:<choice>``, so a press after a restart (the request is
gone) is recognised and answered instead of failing silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import discord

from claudeclaw.api import Dispatcher
from claudeclaw.frontend.delivery import NO_MENTIONS
from claudeclaw.frontend.render import format_elapsed
from claudeclaw.logs import get_logger
from claudeclaw.model import MORE_ANSWERS as MORE
from claudeclaw.model import ApprovalOutcome, RunApproval, RunApprovalDone
from claudeclaw.redaction import scrub_outbound

log = get_logger(component="discord")

PREFIX = "claudeclaw:ap:"
REFUSED = "Only the people this bot answers may approve Claude's tools."
GONE = (
    "This request is no longer waiting (it was answered, nobody answered in time, or "
    "claudeclaw restarted)."
)

_CHOICES: dict[str, ApprovalOutcome] = {
    "allow": "allow",
    "session": "allow_session",
    "deny": "deny",
}


def _fence(text: str) -> str:
    return "```\n" + text.replace("```", "`\u200b``") + "\n```"


def request_text(event: RunApproval) -> str:
    """The request message: what Claude wants to do, and until when it waits."""
    wait = format_elapsed(event.timeout_s) if event.timeout_s else ""
    if event.questions:
        lines = ["❓ **Claude asks:**"]
        for question in event.questions:
            header = f"**{question.header}** · " if question.header else ""
            lines.append(f"{header}{question.question}")
        if wait:
            lines.append(f"_No answer within {wait}: Claude is told nobody answered._")
        return scrub_outbound("\n".join(lines))
    lines = [f"🔐 **Claude wants to use `{event.tool}`**"]
    if event.summary:
        lines.append(_fence(event.summary))
    if wait:
        lines.append(f"_Denied if nobody answers within {wait}._")
    return scrub_outbound("\n".join(lines))


def decided_text(event: RunApproval, done: RunApprovalDone) -> str:
    """The request message once settled: the decision and who made it."""
    who = f" by <@{done.by}>" if done.by.isdigit() else (f" by {done.by}" if done.by else "")
    tool = f"`{event.tool}`"
    summary = _fence(event.summary) if event.summary and not event.questions else ""
    if done.outcome == "allow":
        head = f"✅ {tool} allowed{who}"
    elif done.outcome == "allow_session":
        head = f"✅ {tool} allowed for this session{who}"
    elif done.outcome == "answered":
        head = f"💬 Answered{who}: {done.note}"
    elif done.outcome == "timeout":
        wait = format_elapsed(event.timeout_s)
        head = f"⌛ {tool} denied: nobody answered within {wait}"
    elif done.outcome == "shutdown":
        head = f"🚫 {tool} denied: claudeclaw is restarting"
    elif done.by:
        head = f"🚫 {tool} denied{who}"
    else:
        head = f"🚫 {tool} denied" + (f": {done.note}" if done.note else "")
    return scrub_outbound(f"{head}\n{summary}".strip())


def request_view(event: RunApproval) -> discord.ui.View:
    """The buttons (layout only: presses are handled in :meth:`ApprovalPrompts.on_press`)."""
    view = discord.ui.View(timeout=None)
    base = PREFIX + event.request_id
    if event.questions:
        for qi, question in enumerate(event.questions):
            for oi, label in enumerate(question.options):
                view.add_item(
                    discord.ui.Button(
                        label=label[:80] or "?",
                        style=discord.ButtonStyle.primary,
                        custom_id=f"{base}:q{qi}o{oi}",
                        row=qi,
                    )
                )
        view.add_item(
            discord.ui.Button(
                label="Don't answer",
                style=discord.ButtonStyle.secondary,
                custom_id=f"{base}:deny",
                row=min(len(event.questions), 4),
            )
        )
        return view
    view.add_item(
        discord.ui.Button(
            label="Allow", style=discord.ButtonStyle.success, custom_id=f"{base}:allow"
        )
    )
    view.add_item(
        discord.ui.Button(
            label="Allow for this session",
            style=discord.ButtonStyle.primary,
            custom_id=f"{base}:session",
        )
    )
    view.add_item(
        discord.ui.Button(label="Deny", style=discord.ButtonStyle.danger, custom_id=f"{base}:deny")
    )
    return view


def parse_custom_id(custom_id: str) -> tuple[str, str] | None:
    """(request id, choice) of one of our buttons; None for anything else."""
    if not custom_id.startswith(PREFIX):
        return None
    request_id, _, choice = custom_id[len(PREFIX) :].partition(":")
    return (request_id, choice) if request_id and choice else None


class ApprovalPrompts:
    """The open request messages of this frontend, and the presses on their buttons."""

    def __init__(self, dispatcher: Dispatcher, is_authorized: Callable[[str], bool]) -> None:
        self.dispatcher = dispatcher
        self.is_authorized = is_authorized
        self.open: dict[str, tuple[RunApproval, discord.Message | None, discord.ui.View]] = {}

    async def show(self, channel: discord.abc.Messageable, event: RunApproval) -> None:
        """Post the request with its buttons (a failed post: it waits for its timeout).

        The request is open before the post: people see the message (and press its
        buttons) as soon as Discord has it, before our POST is answered."""
        view = request_view(event)
        self.open[event.request_id] = (event, None, view)
        try:
            message = await channel.send(
                request_text(event), view=view, allowed_mentions=NO_MENTIONS
            )
        except discord.HTTPException as exc:
            log.error("discord.approval_post_failed", status=exc.status, tool=event.tool)
            return
        if event.request_id in self.open:  # (settled only after this returns: same follower)
            self.open[event.request_id] = (event, message, view)

    async def settled(self, done: RunApprovalDone) -> None:
        """Edit the request message to its outcome and who decided (buttons removed)."""
        event, message, view = self.open.pop(done.request_id, (None, None, None))
        if view is not None:
            view.stop()  # discord.py forgets it (it holds every view it was sent with)
        if event is None or message is None:
            return
        try:
            await message.edit(
                content=decided_text(event, done), view=None, allowed_mentions=NO_MENTIONS
            )
        except discord.HTTPException as exc:
            log.warning("discord.approval_edit_failed", status=exc.status)

    async def on_press(self, interaction: discord.Interaction) -> bool:
        """Handle a press on one of our buttons; False when it is not ours. The decision
        reaches the run's event stream, whose follower edits the message (:meth:`settled`)."""
        data: Any = interaction.data or {}
        parsed = parse_custom_id(str(data.get("custom_id", "")))
        if interaction.type != discord.InteractionType.component or parsed is None:
            return False
        request_id, choice = parsed
        user_id = str(interaction.user.id)
        if not self.is_authorized(user_id):
            log.info("approval.press_refused", user_id=user_id, request_id=request_id)
            await interaction.response.send_message(REFUSED, ephemeral=True)
            return True
        question = option = -1
        outcome: ApprovalOutcome | None = _CHOICES.get(choice)
        if outcome is None and choice.startswith("q") and "o" in choice:
            q_text, _, o_text = choice[1:].partition("o")
            if q_text.isdigit() and o_text.isdigit():
                outcome, question, option = "answered", int(q_text), int(o_text)
        entry = self.open.get(request_id)
        taken = "not waiting"
        if outcome is not None and entry is not None:
            taken = self.dispatcher.decide_approval(
                request_id, outcome, user_id, question=question, option=option
            )
        if taken == MORE and entry is not None:  # more questions to answer: show the choice
            chosen = entry[0].questions[question]
            text = f"{request_text(entry[0])}\n✔️ {chosen.question} → {chosen.options[option]}"
            await interaction.response.edit_message(content=scrub_outbound(text[:2000]))
        elif taken:
            await interaction.response.send_message(GONE, ephemeral=True)
        else:
            await interaction.response.defer()  # the follower edits the message
        return True
