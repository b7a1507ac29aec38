"""Plain data shared by the supervisor, the workers and the frontends.

Nothing here knows about Discord, sockets or the ``claude`` executable, so every layer
may import it. Events are the vocabulary of the routing API: a frontend submits a message
for a session key and reads these events back until ``RunDone`` or ``RunFailed``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NewType

from claudeclaw.errors import InvalidKeyError

SessionKey = NewType("SessionKey", str)
"""``"global"`` for DMs and ordinary channels, a Discord thread (or channel) id, or
``job:<name>`` for a scheduled job."""

SessionId = NewType("SessionId", str)
"""A Claude Code session id (a UUID chosen by the CLI)."""

GLOBAL_KEY = SessionKey("global")

_SNOWFLAKE = re.compile(r"[0-9]{1,20}")
JOB_KEY_PREFIX = "job:"
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A job's name (its file name without ``.md``): no '/', no leading '.', at most 64."""


def parse_time(text: object) -> datetime | None:
    """An ISO 8601 time as the state files and events carry it (``…Z`` too; one without a
    zone is UTC), always aware; None when it is missing or cannot be read."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def session_key(value: str | int) -> SessionKey:
    """Validate ``value`` as a session key: ``global``, a Discord id (digits only) or
    ``job:<name>`` with a :data:`JOB_NAME`.

    Keys reach file names and log fields, so anything else is refused here, once.
    """
    text = str(value)
    if text == GLOBAL_KEY or _SNOWFLAKE.fullmatch(text):
        return SessionKey(text)
    if text.startswith(JOB_KEY_PREFIX) and JOB_NAME.fullmatch(text[len(JOB_KEY_PREFIX) :]):
        return SessionKey(text)
    raise InvalidKeyError(
        f"invalid session key {text!r}: expected 'global', a Discord id made of digits, "
        "or job:<name> (letters, digits, '.', '_', '-')"
    )


def job_key(name: str) -> SessionKey:
    """The session key of job ``name`` (validated: raises InvalidKeyError)."""
    return session_key(JOB_KEY_PREFIX + name)


def job_name_of(key: str) -> str:
    """The job name in a ``job:<name>`` key, else ""."""
    return key[len(JOB_KEY_PREFIX) :] if key.startswith(JOB_KEY_PREFIX) else ""


@dataclass(frozen=True, slots=True)
class Workspace:
    """A thread's own git worktree (``threads.workspace: "worktree"``), fixed for the life
    of its session: Claude Code files a session's transcript under its working directory.

    Stored in the session's ``sessions.json`` entry as ``"workspace": {"path", "branch",
    "base", "baseCommit", "subdir"}``.
    """

    path: str  # the worktree's root (absolute)
    branch: str  # e.g. "claudeclaw/1234567890-fix-the-build"
    base: str  # the branch it was created from ("main"), or the commit if HEAD was detached
    base_commit: str  # the commit it was created from
    subdir: str = ""  # the project directory relative to the repository's top level

    @property
    def cwd(self) -> str:
        """Where Claude runs: the project's directory inside the worktree."""
        return f"{self.path}/{self.subdir}" if self.subdir else self.path

    def to_json(self) -> dict[str, str]:
        data = {
            "path": self.path,
            "branch": self.branch,
            "base": self.base,
            "baseCommit": self.base_commit,
        }
        if self.subdir:
            data["subdir"] = self.subdir
        return data

    @classmethod
    def from_json(cls, data: Any) -> Workspace | None:
        """The stored form back; None for anything malformed (it is then ignored)."""
        if not isinstance(data, dict):
            return None
        fields = [data.get(k) for k in ("path", "branch", "base", "baseCommit")]
        subdir = data.get("subdir", "")
        if not all(isinstance(f, str) and f for f in fields) or not isinstance(subdir, str):
            return None
        path, branch, base, base_commit = (str(f) for f in fields)
        return cls(path, branch, base, base_commit, subdir)


@dataclass(frozen=True, slots=True)
class WorkspaceStatus:
    """What ``/status`` shows for a thread's worktree."""

    path: str
    branch: str  # what the worktree has checked out now ("" when detached)
    base: str
    ahead: int  # commits on the worktree's HEAD that its base does not have
    behind: int  # commits on its base since
    changed_files: int  # uncommitted changes, untracked files included
    exists: bool = True
    problem: str = ""  # why the numbers could not be read


@dataclass(frozen=True, slots=True)
class WorkspaceDiff:
    """Everything the thread changed since its base: commits and uncommitted work."""

    stat: str
    patch: str
    truncated: bool  # the patch was cut at ``max_bytes``
    base_commit: str


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One Claude session as stored in session.json / sessions.json (upstream's format)."""

    key: SessionKey
    session_id: SessionId
    created_at: str  # ISO 8601, UTC
    last_used_at: str
    turn_count: int = 0
    compact_warned: bool = False
    workspace: Workspace | None = None  # its git worktree; None: the project directory


# ---- run events (worker -> supervisor -> frontend) -------------------------------------


@dataclass(frozen=True, slots=True)
class RunQueued:
    """Accepted; ``position`` runs are ahead of it (0: next), or it waits for a run slot."""

    msg_id: str
    position: int
    waiting_for_slot: bool = False
    resets_at: str = ""  # ISO time: waiting for Claude's usage limit to reset
    kind: Literal["queued"] = "queued"


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A ``claude`` process was started for the message."""

    msg_id: str
    run_id: str
    pid: int
    resumed: bool  # True when --resume was passed (or a warm claude's next turn)
    steered: bool = False  # this message was written into an already running turn
    kind: Literal["started"] = "started"


@dataclass(frozen=True, slots=True)
class RunSession:
    """The CLI told us the session id (``system/init``); recorded even if the run fails."""

    msg_id: str
    session_id: str
    kind: Literal["session"] = "session"


@dataclass(frozen=True, slots=True)
class RunProgress:
    """Claude is doing something: writing text or calling a tool."""

    msg_id: str
    text: str = ""  # assistant text (may be partial)
    tool: str = ""  # tool name, e.g. "Bash"
    summary: str = ""  # short, single-line summary of the tool input
    kind: Literal["progress"] = "progress"


@dataclass(frozen=True, slots=True)
class RunDone:
    """The run finished and produced a reply."""

    msg_id: str
    reply: str
    session_id: str
    cost_usd: float = 0.0
    duration_ms: int = 0
    num_turns: int = 0
    context_reset: bool = False  # the stored session was gone; a new one was started
    merged_into: str = ""  # answered together with this (earlier) message: no reply of its own
    reply_file: str = ""  # the whole reply, when too large for a frame (``reply`` is its start)
    kind: Literal["done"] = "done"


FailureReason = Literal[
    "error",  # claude reported an error (API error, max turns, bad flags, ...)
    "timeout",  # idle or hard timeout; the process group was killed
    "cancelled",  # /stop or cancel
    "rate_limited",  # usage limit; retry_at may say when
    "crashed",  # the worker process died
    "shutdown",  # the daemon is stopping
    "kept",  # the daemon is stopping; the message is kept and runs after the restart
    "spawn",  # claude could not be started (missing executable, ...)
]


@dataclass(frozen=True, slots=True)
class RunFailed:
    """The run did not produce a reply. ``message`` is safe to show to the user."""

    msg_id: str
    reason: FailureReason
    message: str
    session_id: str = ""
    retry_at: str = ""  # ISO time when a rate limit resets, if known
    kind: Literal["failed"] = "failed"


@dataclass(frozen=True, slots=True)
class RunApproval:
    """The run waits for a person: may Claude use ``tool`` (``security.approvals``)? Or, for
    ``AskUserQuestion``, which option (``questions``). Answer with
    ``Dispatcher.decide_approval(request_id, …)``; ``approval_done`` follows either way."""

    msg_id: str
    request_id: str
    tool: str
    summary: str  # short, redacted: the command, the file path with size, a short diff
    questions: tuple[Question, ...] = ()  # AskUserQuestion: pick an option of each
    timeout_s: float = 0.0  # denied when nobody answers within this
    kind: Literal["approval"] = "approval"


@dataclass(frozen=True, slots=True)
class Question:
    """One of ``AskUserQuestion``'s questions, with its option labels."""

    question: str
    header: str = ""
    options: tuple[str, ...] = ()


# decide_approval's answer when an AskUserQuestion still has questions to answer
MORE_ANSWERS = "more answers needed"
ApprovalOutcome = Literal["allow", "allow_session", "deny", "timeout", "shutdown", "answered"]


@dataclass(frozen=True, slots=True)
class RunApprovalDone:
    """What became of a :class:`RunApproval`: decided by ``by`` (a user id; "" for a timeout,
    a restart, or an approval remembered for the session), or ended unanswered."""

    msg_id: str
    request_id: str
    tool: str
    outcome: ApprovalOutcome
    by: str = ""
    note: str = ""  # e.g. the answers chosen, or why it was denied
    kind: Literal["approval_done"] = "approval_done"


@dataclass(frozen=True, slots=True)
class Remembered:
    """A tool allowed for the rest of one session ("Allow for this session")."""

    tool: str
    by: str  # the user id who allowed it
    at: str  # ISO time


RunEvent = (
    RunQueued
    | RunStarted
    | RunSession
    | RunProgress
    | RunApproval
    | RunApprovalDone
    | RunDone
    | RunFailed
)

_EVENT_TYPES: dict[str, type[Any]] = {
    "queued": RunQueued,
    "started": RunStarted,
    "session": RunSession,
    "progress": RunProgress,
    "approval": RunApproval,
    "approval_done": RunApprovalDone,
    "done": RunDone,
    "failed": RunFailed,
}


def event_to_dict(event: RunEvent) -> dict[str, Any]:
    """Plain dict for JSON (IPC frames, ``--json`` output)."""
    plain: dict[str, Any] = as_plain(event)
    return plain


def as_plain(value: Any) -> Any:
    """``dataclasses.asdict`` without its deep copies: dataclasses become dicts, lists,
    tuples and dicts are rebuilt, everything else is shared. Run events and ledger
    entries hold only those and immutable atoms; asdict ran ``copy.deepcopy`` on each
    string, ~6x slower, on every IPC frame and every ledger line."""
    fields = getattr(value, "__dataclass_fields__", None)
    if fields is not None and not isinstance(value, type):
        return {name: as_plain(getattr(value, name)) for name in fields}
    if isinstance(value, list | tuple):
        return type(value)(as_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: as_plain(item) for key, item in value.items()}
    return value


def event_from_dict(data: dict[str, Any]) -> RunEvent:
    """Inverse of :func:`event_to_dict`; unknown keys are ignored, a missing kind raises."""
    kind = data.get("kind")
    cls = _EVENT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown run event kind {kind!r}")
    names = set(cls.__dataclass_fields__)
    fields = {k: v for k, v in data.items() if k in names}
    if cls is RunApproval:
        fields["questions"] = tuple(
            Question(
                str(q.get("question", "")),
                str(q.get("header", "")),
                tuple(str(o) for o in q.get("options", ())),
            )
            for q in fields.get("questions", ())
            if isinstance(q, dict)
        )
    event: RunEvent = cls(**fields)
    return event


def is_final(event: RunEvent) -> bool:
    """True for the last event of a run (done or failed)."""
    return isinstance(event, RunDone | RunFailed)


@dataclass(slots=True)
class WorkerStatus:
    """What ``claudeclaw status`` shows for one worker."""

    key: str
    pid: int
    state: str  # "starting", "idle", "running", "stopping"
    queue_length: int
    running_msg_id: str = ""
    run_elapsed_s: float = 0.0
    session_id: str = ""
    claude_pid: int = 0
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    claude_mode: str = ""  # "warm": a live claude kept between messages; "cold"; "": none
    claude_rss_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def info_to_dict(info: SessionInfo) -> dict[str, Any]:
    """A :class:`SessionInfo` as JSON (control socket answers, ``--json`` output)."""
    return asdict(info)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session key as the routing API reports it (``/status``, ``claudeclaw sessions``)."""

    key: SessionKey
    record: SessionRecord | None  # None: no Claude session yet (next message creates one)
    running: bool = False
    queue_length: int = 0  # messages waiting behind the running one
    worker_pid: int = 0  # 0: no live worker
    run_elapsed_s: float = 0.0
    last_error: str = ""
    workspace: WorkspaceStatus | None = None  # its git worktree, when it has one


@dataclass(frozen=True, slots=True)
class ResetOutcome:
    """What ending a session did: whether there was one, and what became of its worktree
    (the kept branch, the saved patch), in words fit for the reply."""

    had_session: bool
    workspace_note: str = ""


@dataclass(frozen=True, slots=True)
class ReplyTo:
    """Where a message came from in its frontend, so its answer can find its way back
    even after a restart (Discord: the channel and the user's message)."""

    channel_id: str
    message_id: str


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """An accepted message whose answer is not in its frontend yet, as kept in
    ``pending.jsonl`` across restarts. ``answer`` is its final event once it has one (the
    frontend still has to post it)."""

    msg_id: str
    key: SessionKey
    prompt: str
    origin: str
    reply_to: ReplyTo
    accepted_at: str  # ISO 8601 UTC
    started: bool = False  # a claude run began: after a restart it is not run again
    answer: RunDone | RunFailed | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = as_plain(self)
        if self.answer is None:
            del data["answer"]  # the file format of a message still waiting, as before
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingMessage:
        reply = data["reply_to"]
        return cls(
            msg_id=str(data["msg_id"]),
            key=session_key(data["key"]),
            prompt=str(data["prompt"]),
            origin=str(data.get("origin", "discord")),
            reply_to=ReplyTo(str(reply["channel_id"]), str(reply["message_id"])),
            accepted_at=str(data.get("accepted_at", "")),
            started=bool(data.get("started", False)),
            answer=_answer_from_json(data.get("answer")),
        )


def _answer_from_json(data: Any) -> RunDone | RunFailed | None:
    if data is None:
        return None
    event = event_from_dict(data)
    if not isinstance(event, RunDone | RunFailed):
        raise ValueError(f"a stored answer must be done or failed, not {event.kind!r}")
    return event
