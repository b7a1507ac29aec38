"""stream-json lines → typed messages → run events, and the verdict on a finished run.

Everything here is pure: no processes, no clocks except the ``now`` passed in. The CLI adds
fields in every release, so parsing reads only the keys it needs and ignores the rest; a
line that is not a JSON object is reported as :class:`Garbage` and skipped by the caller.

The verdict follows the CLI's real behaviour (see docs/CLAUDE_RUNNER.md): ``is_error`` in
the result is the error flag (an API error comes with ``"subtype": "success"``), the exit
code counts too, ``error_max_turns`` has no ``result`` key (its text is in ``errors``), and
when stdout is empty the reason is on stderr (bad flags, unknown ``--resume`` id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from claudeclaw import surrogates
from claudeclaw.model import RunDone, RunEvent, RunFailed, RunProgress, RunSession

__all__ = [
    "AssistantMessage",
    "Garbage",
    "InitMessage",
    "OtherMessage",
    "ResultMessage",
    "StreamMessage",
    "StreamState",
    "ToolUse",
    "error_detail",
    "is_api_throttled",
    "is_rate_limited",
    "is_session_gone",
    "needs_new_session",
    "parse_line",
    "parse_retry_at",
    "summarize_tool",
    "translate",
    "verdict",
]

SUMMARY_CHARS = 80
MESSAGE_CHARS = 1500  # longest error detail shown to a user


# ---- typed messages ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitMessage:
    """``{"type":"system","subtype":"init"}``: the first line; carries the session id."""

    session_id: str
    model: str = ""
    cwd: str = ""


@dataclass(frozen=True, slots=True)
class ToolUse:
    name: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AssistantMessage:
    """One ``assistant`` line: its text blocks and tool calls (thinking is ignored)."""

    texts: tuple[str, ...] = ()
    tools: tuple[ToolUse, ...] = ()
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class ResultMessage:
    """The ``result`` line: the reply (``result``) or the error (``is_error``)."""

    subtype: str
    is_error: bool
    result: str | None  # None when the key is absent (error_max_turns, bad --resume)
    errors: tuple[str, ...] = ()
    session_id: str = ""
    total_cost_usd: float = 0.0
    duration_ms: int = 0
    num_turns: int = 0
    api_error_status: int | None = None
    terminal_reason: str = ""


@dataclass(frozen=True, slots=True)
class OtherMessage:
    """A valid line we do not act on (``user`` tool results, ``stream_event``, ...)."""

    type: str
    subtype: str = ""


@dataclass(frozen=True, slots=True)
class Garbage:
    """A line that is not a JSON object. Only its length is kept (it may hold user text)."""

    length: int


StreamMessage = InitMessage | AssistantMessage | ResultMessage | OtherMessage | Garbage


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _parse_assistant(data: dict[str, Any]) -> AssistantMessage:
    message = data.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    texts: list[str] = []
    tools: list[ToolUse] = []
    if isinstance(content, str):  # the Anthropic API allows a bare string
        texts.append(content)
    elif isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "tool_use":
                tool_input = block.get("input")
                tools.append(
                    ToolUse(
                        name=_str(block.get("name")) or "tool",
                        input=tool_input if isinstance(tool_input, dict) else {},
                    )
                )
    return AssistantMessage(
        texts=tuple(texts), tools=tuple(tools), session_id=_str(data.get("session_id"))
    )


def _parse_result(data: dict[str, Any]) -> ResultMessage:
    errors = data.get("errors")
    status = data.get("api_error_status")
    result = data.get("result")
    return ResultMessage(
        subtype=_str(data.get("subtype")),
        is_error=data.get("is_error") is True,
        result=result if isinstance(result, str) else None,
        errors=tuple(str(e) for e in errors) if isinstance(errors, list) else (),
        session_id=_str(data.get("session_id")),
        total_cost_usd=_float(data.get("total_cost_usd")),
        duration_ms=_int(data.get("duration_ms")),
        num_turns=_int(data.get("num_turns")),
        api_error_status=status
        if isinstance(status, int) and not isinstance(status, bool)
        else None,
        terminal_reason=_str(data.get("terminal_reason")),
    )


def parse_line(line: str | bytes) -> StreamMessage | None:
    """One stdout line → a typed message; ``None`` for a blank line."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text:
        return None
    try:
        data = surrogates.loads(text)
    except ValueError:
        return Garbage(len(text))
    if not isinstance(data, dict):
        return Garbage(len(text))
    kind = _str(data.get("type"))
    subtype = _str(data.get("subtype"))
    if kind == "system" and subtype == "init":
        return InitMessage(
            session_id=_str(data.get("session_id")),
            model=_str(data.get("model")),
            cwd=_str(data.get("cwd")),
        )
    if kind == "assistant":
        return _parse_assistant(data)
    if kind == "result":
        return _parse_result(data)
    return OtherMessage(type=kind, subtype=subtype)


# ---- progress ----------------------------------------------------------------------------

_SUMMARY_KEYS: dict[str, tuple[str, ...]] = {
    "Bash": ("command",),
    "Read": ("file_path",),
    "Edit": ("file_path",),
    "MultiEdit": ("file_path",),
    "Write": ("file_path",),
    "NotebookEdit": ("notebook_path",),
    "Grep": ("pattern",),
    "Glob": ("pattern",),
    "WebFetch": ("url",),
    "WebSearch": ("query",),
    "Task": ("description",),
    "Agent": ("description",),
    "TodoWrite": (),
}
_FALLBACK_KEYS = (
    "description",
    "command",
    "file_path",
    "path",
    "pattern",
    "url",
    "query",
    "prompt",
)


def _one_line(text: str, limit: int = SUMMARY_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def summarize_tool(name: str, tool_input: dict[str, Any]) -> str:
    """A short single-line summary of a tool call: the command, path or pattern."""
    keys = _SUMMARY_KEYS.get(name, _FALLBACK_KEYS)
    for key in keys:
        value = tool_input.get(key)
        if isinstance(value, str) and value.strip():
            return _one_line(value)
    return ""


def progress_events(message: AssistantMessage, msg_id: str) -> list[RunProgress]:
    """``RunProgress`` events for one assistant line: each text block, then each tool call."""
    events = [RunProgress(msg_id=msg_id, text=text) for text in message.texts if text.strip()]
    events += [
        RunProgress(msg_id=msg_id, tool=tool.name, summary=summarize_tool(tool.name, tool.input))
        for tool in message.tools
    ]
    return events


# ---- the state of one run ----------------------------------------------------------------


@dataclass(slots=True)
class StreamState:
    """What a run's stdout told us so far. Feed it every parsed message."""

    session_id: str = ""  # from system/init (the one to record)
    result: ResultMessage | None = None
    garbage_lines: int = 0
    lines: int = 0
    texts: list[str] = field(default_factory=list)
    tools_used: int = 0  # tool calls seen: a run that used one must not simply be re-run
    session_announced: bool = False

    def feed(self, message: StreamMessage) -> None:
        self.lines += 1
        if isinstance(message, Garbage):
            self.garbage_lines += 1
        elif isinstance(message, InitMessage):
            if message.session_id:
                self.session_id = message.session_id
        elif isinstance(message, AssistantMessage):
            self.texts.extend(t for t in message.texts if t.strip())
            self.tools_used += len(message.tools)
        elif isinstance(message, ResultMessage):
            self.result = message


def translate(message: StreamMessage, state: StreamState, msg_id: str) -> list[RunEvent]:
    """Feed ``message`` into ``state``; the run events it causes (``RunSession`` once, as
    soon as the session id is known; ``RunProgress`` for assistant text and tool calls)."""
    state.feed(message)
    session_id = ""
    if isinstance(message, InitMessage):
        session_id = message.session_id
    elif isinstance(message, ResultMessage) and not message.is_error:
        session_id = message.session_id  # no init line seen (older CLI): the result names it
    elif isinstance(message, AssistantMessage):
        return list(progress_events(message, msg_id))
    if session_id and not state.session_announced:
        state.session_announced = True
        if not state.session_id:
            state.session_id = session_id
        return [RunSession(msg_id=msg_id, session_id=session_id)]
    return []


# ---- the verdict -------------------------------------------------------------------------

_RATE_LIMIT = re.compile(r"you('|\u2019)ve hit your limit|out of extra usage", re.IGNORECASE)
_STALE_SESSION = re.compile(r"No conversation found with session ID", re.IGNORECASE)
# Upstream's ``Invalid.*signature.*thinking block``, also matching the API's own wording,
# which quotes the words: "Invalid `signature` in `thinking` block".
_BAD_THINKING = re.compile(r"Invalid.*signature.*thinking\W{0,3}block", re.IGNORECASE | re.DOTALL)
_RESETS = re.compile(
    r"resets?\s+(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*([ap]\.?m\.?)?\s*(?:\(([^)]+)\))?",
    re.IGNORECASE,
)


def _result_texts(state: StreamState) -> list[str]:
    result = state.result
    if result is None:
        return []
    texts = list(result.errors)
    if result.result:
        texts.insert(0, result.result)
    return texts


def error_detail(state: StreamState, rc: int | None, stderr: str) -> str:
    """The most useful error text: the result's text or errors, else stderr, else the code."""
    texts = [t.strip() for t in _result_texts(state) if t.strip()]
    if texts:
        detail = "; ".join(texts)
    elif stderr.strip():
        detail = stderr.strip()
    elif rc is not None and rc < 0:
        detail = f"claude was killed by signal {-rc}"
    elif state.result is None:
        detail = f"claude exited with code {rc} without a result"
    else:
        detail = f"claude reported an error (exit code {rc}) without a message"
    if len(detail) > MESSAGE_CHARS:
        detail = detail[: MESSAGE_CHARS - 1] + "…"
    return detail


def _failed_texts(state: StreamState, stderr: str) -> str:
    return "\n".join([*_result_texts(state), stderr])


def needs_new_session(state: StreamState, rc: int | None, stderr: str) -> bool:
    """The resumed session is unusable: gone (``No conversation found``) or corrupted
    (``Invalid signature in thinking block``). Only meaningful for a failed resumed run."""
    failed = rc != 0 or (state.result is not None and state.result.is_error)
    text = _failed_texts(state, stderr)
    return failed and (is_session_gone(text) or bool(_BAD_THINKING.search(text)))


def is_session_gone(text: str) -> bool:
    """``text`` (an error, stderr) is the CLI saying it has no such session to resume."""
    return bool(_STALE_SESSION.search(text))


def is_rate_limited(state: StreamState, stderr: str) -> bool:
    """Claude's usage limit (``You've hit your limit · resets 3pm``): it holds for every
    run until its reset, so the pool pauses. A plain API 429 is not this (see
    :func:`is_api_throttled`)."""
    return bool(_RATE_LIMIT.search(_failed_texts(state, stderr)))


THROTTLE_STATUSES = frozenset({429, 529})  # rate limited, overloaded: passes in a while


def is_api_throttled(state: StreamState) -> bool:
    """The API refused the run with a 429 (or 529 overloaded) after the CLI's own retries:
    this run may be tried again later; other runs are not affected."""
    result = state.result
    return (
        result is not None
        and result.is_error
        and result.api_error_status in THROTTLE_STATUSES
        and not _RATE_LIMIT.search(_failed_texts(state, ""))
    )


def parse_retry_at(text: str, now: datetime, default_tz: str = "UTC") -> str:
    """ISO time (UTC) of the next ``resets 3pm (Europe/Berlin)`` / ``resets 11:30pm``
    after ``now``; ``""`` when the text names no time we understand."""
    match = _RESETS.search(text)
    if match is None:
        return ""
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    meridiem = (match.group(3) or "").lower().replace(".", "")
    if meridiem:
        if not 1 <= hour <= 12:
            return ""
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    if hour > 23 or minute > 59:
        return ""
    zone_name = (match.group(4) or default_tz or "UTC").strip()
    try:
        zone: Any = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    local_now = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    candidate = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local_now:
        candidate += timedelta(days=1)
    return candidate.astimezone(UTC).isoformat()


# Failures a user can fix, by what the CLI says: the fix to add to the message.
_FIXES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"cannot be used with root/sudo privileges", re.I),
        "claude refuses to skip permission prompts as root: run claudeclaw as an ordinary "
        "user (the packaged service does), or set IS_SANDBOX=1 if this is a sandbox",
    ),
    (
        re.compile(r"not logged in|please run /login", re.I),
        "the claude CLI is not logged in for the daemon's user: run `claude` once as that "
        "user (same HOME) and /login, or set an API key",
    ),
    (
        re.compile(r"failed to authenticate|invalid x-api-key|API Error: 401", re.I),
        "the API key or login was rejected: log the claude CLI in again or fix the key",
    ),
)


def fix_for(detail: str) -> str:
    """``" Fix: …"`` for a failure we know how to fix, else ``""``."""
    for pattern, fix in _FIXES:
        if pattern.search(detail):
            return f" Fix: {fix}."
    return ""


def verdict(
    state: StreamState,
    rc: int | None,
    stderr: str,
    *,
    msg_id: str,
    now: datetime,
    default_tz: str = "UTC",
) -> RunDone | RunFailed:
    """The final event of a run that exited on its own (no timeout, no cancel)."""
    result = state.result
    session_id = state.session_id or (result.session_id if result and not result.is_error else "")
    if result is not None and not result.is_error and rc == 0:
        return RunDone(
            msg_id=msg_id,
            reply=result.result or "",
            session_id=session_id,
            cost_usd=result.total_cost_usd,
            duration_ms=result.duration_ms,
            num_turns=result.num_turns,
        )
    detail = error_detail(state, rc, stderr)
    if is_rate_limited(state, stderr):
        retry_at = parse_retry_at(_failed_texts(state, stderr), now, default_tz)
        when = f" It resets at {retry_at}." if retry_at else ""
        return RunFailed(
            msg_id=msg_id,
            reason="rate_limited",
            message=f"Claude's usage limit is reached.{when} ({detail})",
            session_id=session_id,
            retry_at=retry_at,
        )
    if is_api_throttled(state):
        return RunFailed(
            msg_id=msg_id,
            reason="error",
            message=(
                "The Claude API is busy and refused this request (rate limited) even after "
                f"retries. Send it again in a few minutes. ({detail})"
            ),
            session_id=session_id,
        )
    return RunFailed(
        msg_id=msg_id,
        reason="error",
        message=f"Claude failed: {detail}{fix_for(detail)}",
        session_id=session_id,
    )
