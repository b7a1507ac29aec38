"""Tool approvals (``security.approvals``): who may let Claude use a tool, and what is remembered.

A worker's warm ``claude`` asks before a tool its security level does not settle
(``can_use_tool``); the worker sends an ``approval`` frame, and the supervisor's
:class:`ApprovalBroker` decides where it goes:

* a tool allowed "for this session" earlier (same key, same session id) is allowed at once;
* otherwise the request becomes a :class:`~claudeclaw.model.RunApproval` event on the
  message's own event stream, so the frontend that owns the message asks its user (Discord
  buttons, a y/n on ``claudeclaw send``'s terminal) and answers with :meth:`decide`;
* nobody answers within ``security.approvalTimeoutSeconds``: denied; the daemon stops:
  denied. Every request ends with a :class:`~claudeclaw.model.RunApprovalDone` event and one
  ``approval.granted``/``denied``/``timeout`` log event.

Remembered approvals live in ``approvals.json`` in the state directory (0600, atomic,
``jsonstore``), keyed by session key and bound to the session id they were given in: a new
session, ``/reset`` or ``/permissions`` forgets them. :func:`summarize` is the short,
redacted text a person sees about a tool's input.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claudeclaw.jsonstore import is_object, read_json, write_json
from claudeclaw.logs import get_logger
from claudeclaw.model import (
    MORE_ANSWERS,
    ApprovalOutcome,
    Question,
    Remembered,
    RunApproval,
    RunApprovalDone,
    RunEvent,
    SessionKey,
)
from claudeclaw.redaction import scrub_outbound

__all__ = [
    "ASK_USER_QUESTION",
    "ApprovalBroker",
    "Remembered",
    "questions_of",
    "summarize",
]

log = get_logger()

ASK_USER_QUESTION = "AskUserQuestion"
SUMMARY_CHARS = 900  # the whole summary; Discord messages hold 2000
_LINE_CHARS = 200
_DIFF_LINES = 8


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(text: str) -> str:
    size = len(text.encode("utf-8"))
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    unit = f"{size} bytes" if size < 10_000 else f"{size / 1024:.0f} KiB"
    return f"{unit}, {lines} line{'s' if lines != 1 else ''}"


def _diff(old: str, new: str) -> str:
    out = [f"- {_cut(line, _LINE_CHARS)}" for line in old.splitlines()[:_DIFF_LINES]]
    if old.count("\n") >= _DIFF_LINES:
        out.append("- …")
    out += [f"+ {_cut(line, _LINE_CHARS)}" for line in new.splitlines()[:_DIFF_LINES]]
    if new.count("\n") >= _DIFF_LINES:
        out.append("+ …")
    return "\n".join(out)


def summarize(tool: str, tool_input: Mapping[str, Any]) -> str:
    """What a person must see to decide: the command, the file path with its size or a short
    diff, the URL… Cut to :data:`SUMMARY_CHARS` and scrubbed of secrets like every reply."""

    def text(name: str) -> str:
        value = tool_input.get(name)
        return value if isinstance(value, str) else ""

    path = text("file_path") or text("notebook_path") or text("path")
    if tool == "Bash":
        summary = text("command")
        if text("description"):
            summary += f"\n({_cut(text('description'), _LINE_CHARS)})"
    elif tool == "Write":
        summary = f"{path} ({_size(text('content'))})"
    elif tool == "Edit":
        summary = f"{path}\n{_diff(text('old_string'), text('new_string'))}"
    elif tool == "MultiEdit":
        edits = tool_input.get("edits")
        summary = f"{path} ({len(edits) if isinstance(edits, list) else 0} edits)"
    elif tool == "NotebookEdit":
        summary = f"{path} ({_size(text('new_source'))})"
    elif tool == "WebFetch":
        summary = text("url")
    elif tool == "WebSearch":
        summary = text("query")
    elif tool == "ExitPlanMode":
        summary = "Claude has a plan and wants to start working on it."
        if text("plan"):
            summary += "\n" + text("plan")
    elif path:
        summary = path
    else:
        summary = json.dumps(dict(tool_input), ensure_ascii=False, default=str)
    return scrub_outbound(_cut(summary.strip(), SUMMARY_CHARS))


def questions_of(tool: str, tool_input: Mapping[str, Any]) -> tuple[Question, ...]:
    """``AskUserQuestion``'s questions and option labels; () for any other tool (or junk)."""
    if tool != ASK_USER_QUESTION:
        return ()
    raw = tool_input.get("questions")
    out: list[Question] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            continue
        options = item.get("options")
        labels = tuple(
            scrub_outbound(_cut(str(o.get("label", "")), 80))
            for o in (options if isinstance(options, list) else [])
            if isinstance(o, dict) and o.get("label")
        )
        if labels:
            out.append(
                Question(
                    scrub_outbound(_cut(item["question"], 300)),
                    scrub_outbound(_cut(str(item.get("header") or ""), 40)),
                    labels[:5],
                )
            )
    return tuple(out[:4])


# ---- remembered approvals ---------------------------------------------------------------


def _valid_store(data: Any) -> bool:
    return is_object(data) and is_object(data.get("keys", {}))


@dataclass(slots=True)
class _Pending:
    key: SessionKey
    event: RunApproval
    session_id: str
    started: float = field(default_factory=time.monotonic)
    answers: dict[int, str] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    owner: object = None  # the worker that asked (one key may have a leaving and a new one)


Answer = Callable[[SessionKey, dict[str, Any]], bool]  # send a frame to the key's worker
Push = Callable[[str, RunEvent], bool]  # an event into a message's stream; False: none


class ApprovalBroker:
    """Pending approval requests and the approvals remembered per session (see module doc)."""

    def __init__(
        self, path: Path, *, timeout: Callable[[], float], answer: Answer, push: Push
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.answer = answer
        self.push = push
        self.pending: dict[str, _Pending] = {}
        self._keys: dict[str, dict[str, Any]] = {}  # key -> {session_id, tools: {tool: …}}
        self._write_lock = asyncio.Lock()
        self._writes: set[asyncio.Task[None]] = set()

    # ---- the remembered approvals, on disk ----------------------------------------------

    async def load(self) -> None:
        data = await asyncio.to_thread(read_json, self.path, validate=_valid_store, log=log)
        keys = data.get("keys", {}) if isinstance(data, dict) else {}
        self._keys = {
            str(k): v
            for k, v in keys.items()
            if isinstance(v, dict) and isinstance(v.get("tools"), dict)
        }

    def _save(self) -> None:
        snapshot = json.loads(json.dumps({"version": 1, "keys": self._keys}))

        async def write() -> None:
            async with self._write_lock:
                try:
                    await asyncio.to_thread(write_json, self.path, snapshot)
                except Exception as exc:  # a full disk: still allowed for now, not remembered
                    log.error("approval.store_write_failed", error=str(exc))

        task = asyncio.get_running_loop().create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        """Wait for the writes queued so far (tests, shutdown)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    def remembered(self, key: SessionKey, session_id: str | None = None) -> list[Remembered]:
        """The tools allowed for ``key``'s session (``session_id``: only if it is still that)."""
        entry = self._keys.get(key)
        if entry is None or (session_id is not None and entry.get("session_id") != session_id):
            return []
        return [
            Remembered(str(tool), str(v.get("by", "")), str(v.get("at", "")))
            for tool, v in sorted(entry["tools"].items())
            if isinstance(v, dict)
        ]

    def remember(self, key: SessionKey, session_id: str, tool: str, by: str) -> None:
        entry = self._keys.get(key)
        if entry is None or entry.get("session_id") != session_id:
            entry = self._keys[key] = {"session_id": session_id, "tools": {}}
        entry["tools"][tool] = {"by": by, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        self._save()

    def revoke(self, key: SessionKey, tool: str) -> bool:
        entry = self._keys.get(key)
        if entry is None or tool not in entry["tools"]:
            return False
        del entry["tools"][tool]
        if not entry["tools"]:
            del self._keys[key]
        log.info("approval.revoked", session_key=key, tool=tool)
        self._save()
        return True

    def forget(self, key: SessionKey, why: str) -> None:
        """Drop ``key``'s remembered approvals (``/reset``, a new session)."""
        if self._keys.pop(key, None) is not None:
            log.info("approval.forgotten", session_key=key, why=why)
            self._save()

    def session_changed(self, key: SessionKey, session_id: str) -> None:
        entry = self._keys.get(key)
        if entry is not None and entry.get("session_id") != session_id:
            self.forget(key, "new session")

    # ---- requests -----------------------------------------------------------------------

    def ask(self, key: SessionKey, frame: Mapping[str, Any], owner: object = None) -> None:
        """A worker's ``approval`` frame: answer from memory, or ask the message's frontend.
        ``owner`` names the asking worker for :meth:`drop`."""
        request_id = str(frame.get("request_id") or "")
        msg_id = str(frame.get("msg_id") or "")
        tool = str(frame.get("tool") or "")
        session_id = str(frame.get("session_id") or "")
        raw_questions = frame.get("questions")
        event = RunApproval(
            msg_id=msg_id,
            request_id=request_id,
            tool=tool,
            summary=scrub_outbound(str(frame.get("summary") or ""))[:SUMMARY_CHARS],
            questions=tuple(
                Question(str(q[0]), str(q[1]), tuple(str(o) for o in q[2]))
                for q in (raw_questions if isinstance(raw_questions, list) else [])
                if isinstance(q, list) and len(q) == 3 and isinstance(q[2], list)
            ),
            timeout_s=self.timeout(),
        )
        log.info("approval.requested", session_key=key, msg_id=msg_id, tool=tool)
        if not event.questions and any(r.tool == tool for r in self.remembered(key, session_id)):
            self.answer(key, {"type": "approval_answer", "request_id": request_id, "allow": True})
            log.info("approval.granted", session_key=key, tool=tool, user_id="", remembered=True)
            self.push(msg_id, RunApprovalDone(msg_id, request_id, tool, "allow_session"))
            return
        pending = _Pending(key, event, session_id, owner=owner)
        self.pending[request_id] = pending
        if not self.push(msg_id, event):
            self._finish(request_id, "deny", "", note="nobody follows this message")
            return
        pending.timer = asyncio.get_running_loop().call_later(
            event.timeout_s, self._finish, request_id, "timeout", ""
        )

    def decide(
        self,
        request_id: str,
        outcome: ApprovalOutcome,
        by: str,
        *,
        question: int = -1,
        option: int = -1,
    ) -> str:
        """A person's answer. For ``AskUserQuestion`` pass ``outcome="answered"`` with the
        question and option index (one call per question). Returns "" when decided,
        :data:`MORE_ANSWERS` when questions remain, else why not ("not waiting", "bad
        choice")."""
        pending = self.pending.get(request_id)
        if pending is None:
            return "not waiting"
        if outcome == "answered":
            questions = pending.event.questions
            if not 0 <= question < len(questions):
                return "bad choice"
            if not 0 <= option < len(questions[question].options):
                return "bad choice"
            pending.answers[question] = questions[question].options[option]
            if len(pending.answers) < len(questions):
                return MORE_ANSWERS
        elif outcome not in ("allow", "allow_session", "deny"):
            return "bad choice"
        self._finish(request_id, outcome, by)
        return ""

    def _finish(self, request_id: str, outcome: ApprovalOutcome, by: str, note: str = "") -> None:
        pending = self.pending.pop(request_id, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        event, key = pending.event, pending.key
        allow = outcome in ("allow", "allow_session", "answered")
        frame: dict[str, Any] = {
            "type": "approval_answer",
            "request_id": request_id,
            "allow": allow,
        }
        if outcome == "answered":
            by_question = {
                event.questions[i].question: label for i, label in sorted(pending.answers.items())
            }
            frame["answers"] = by_question
            note = "; ".join(f"{q}: {a}" for q, a in by_question.items())
        elif not allow:
            frame["message"] = _denial(outcome, by, self.timeout())
            frame["interrupt"] = outcome == "shutdown"
        if outcome == "allow_session" and pending.session_id:
            self.remember(key, pending.session_id, event.tool, by)
        self.answer(key, frame)
        waited = round(time.monotonic() - pending.started, 1)
        name = {
            "timeout": "approval.timeout",
            "deny": "approval.denied",
            "shutdown": "approval.denied",
        }
        log.info(
            name.get(outcome, "approval.granted"),
            session_key=key,
            msg_id=event.msg_id,
            tool=event.tool,
            user_id=by,
            outcome=outcome,
            waited_s=waited,
        )
        self.push(
            event.msg_id, RunApprovalDone(event.msg_id, request_id, event.tool, outcome, by, note)
        )

    def withdraw(self, request_id: str) -> None:
        """The worker no longer waits (the run was stopped or ended): the request is over."""
        self._finish(request_id, "deny", "", note="the run was stopped")

    def drop(
        self,
        key: SessionKey,
        outcome: ApprovalOutcome = "deny",
        note: str = "",
        *,
        owner: object = None,
    ) -> None:
        """End ``key``'s waiting requests unanswered (it was reset; or, with ``owner``, that
        worker is gone)."""
        for request_id, pending in list(self.pending.items()):
            if pending.key == key and (owner is None or pending.owner is owner):
                self._finish(request_id, outcome, "", note)

    def deny_all(self, note: str) -> None:
        """The daemon stops: every waiting request is denied (its run ends as interrupted)."""
        for request_id in list(self.pending):
            self._finish(request_id, "shutdown", "", note)


def _denial(outcome: ApprovalOutcome, by: str, timeout: float) -> str:
    """What Claude is told when a tool use was refused."""
    if outcome == "timeout":
        return f"Denied: nobody approved this tool use within {timeout:g} s."
    if outcome == "shutdown":
        return "Denied: claudeclaw is restarting; nobody can approve this tool use now."
    who = f" (user {by})" if by else ""
    return f"The user denied this tool use{who}. Do not retry it; ask what to do instead."
