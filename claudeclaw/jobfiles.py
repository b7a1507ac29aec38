"""Job files: ``.claude/claudeclaw/jobs/<name>.md``, read the way the original reads them.

A job file is frontmatter between ``---`` lines (one ``key: value`` per line, quotes
around the value optional) followed by the prompt. The original's keys are ``schedule``,
``recurring`` (alias ``daily``), ``notify`` (``true``/``false``/``error``), ``model``,
``timeout`` (seconds), ``retry``, ``retry_delay`` (seconds), ``agent``, ``label`` and
``enabled``; ours is ``catchUp``. A file that cannot be used is reported with the reason
and the fix, and skipped: one bad file never stops the other jobs or the daemon.

Unlike the original we never rewrite a job file: a one-shot job's completion is recorded
in the scheduler's state (see ``scheduler.py``). A file without a ``schedule:`` line is
what the original leaves behind after a one-shot ran; it is listed, never run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from claudeclaw.cron import CronError, CronSchedule
from claudeclaw.model import JOB_NAME

# A job's name is its file name without ``.md``; it becomes the session key ``job:<name>``
# and a log field, so model.JOB_NAME (the key's rule) decides what is accepted.

NotifyMode = Literal["always", "never", "error"]
PROMPT_FILE_SUFFIXES = (".md", ".txt", ".prompt")
MAX_JOB_FILE_BYTES = 256 * 1024

_FRONTMATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n(.*))?\Z", re.S)
_KNOWN = frozenset(
    {
        "schedule",
        "recurring",
        "daily",
        "notify",
        "model",
        "timeout",
        "retry",
        "retry_delay",
        "agent",
        "label",
        "enabled",
        "catchup",
        "description",
    }
)
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


@dataclass(frozen=True, slots=True)
class Job:
    """One usable job file."""

    name: str
    path: Path
    schedule: CronSchedule | None  # None: no schedule line (a finished one-shot upstream)
    prompt: str  # the body; or, with prompt_file set, the path as written
    prompt_file: Path | None = None  # a body that names a file: read at every run
    recurring: bool = False
    notify: NotifyMode = "always"
    model: str = ""
    timeout_s: float | None = None
    retry: int = 0
    retry_delay_s: float = 300.0
    agent: str = ""
    label: str = ""
    enabled: bool = True
    catch_up: bool = True
    warnings: tuple[str, ...] = field(default=())

    @property
    def fingerprint(self) -> str:
        """Changes when the schedule or the prompt is edited: a finished one-shot job is
        armed again by such an edit."""
        text = f"{self.schedule.expr if self.schedule else ''}\0{self.prompt}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def read_prompt(self, root: Path) -> str:
        """The prompt to run (a named prompt file is re-read each time, like the original)."""
        if self.prompt_file is None:
            return self.prompt
        return (root / self.prompt_file).read_text(encoding="utf-8").strip()


@dataclass(frozen=True, slots=True)
class JobFileError:
    """A job file that was skipped, and why (shown in the log, ``doctor`` and ``jobs list``)."""

    name: str
    path: Path
    message: str


def names_prompt_file(text: str) -> bool:
    """The original's rule, for job bodies and ``heartbeat.prompt`` alike: one line ending
    in ``.md``, ``.txt`` or ``.prompt`` is a file to read at every run, not the prompt."""
    return "\n" not in text and text.endswith(PROMPT_FILE_SUFFIXES)


def _value(raw: str) -> str:
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text.strip("\"'")


def _bool(key: str, raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{key}: {raw!r} is not true or false; write {key}: true (or false)")


def _seconds(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 < value <= 7 * 86400):
        raise ValueError(f"{key}: {raw!r} is not a number of seconds between 1 and 604800")
    return value


def parse_job(name: str, text: str, path: Path) -> Job:
    """One job file's text → :class:`Job`; raises ValueError naming the problem and fix."""
    if not JOB_NAME.fullmatch(name):
        raise ValueError(
            "the file name is not a usable job name; rename it to letters, digits, '.', '_' "
            "or '-' (at most 64, starting with a letter or digit) plus .md"
        )
    match = _FRONTMATTER.match(text)
    if match is None:
        raise ValueError(
            "no frontmatter: the file must start with a '---' line, then 'schedule: <cron>' "
            "and the other keys, then a '---' line, then the prompt"
        )
    front, body = match.group(1), (match.group(2) or "").strip()
    values: dict[str, str] = {}
    warnings: list[str] = []
    for number, line in enumerate(front.splitlines(), start=2):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, raw = stripped.partition(":")
        if not sep:
            raise ValueError(f"line {number}: {stripped!r} is not 'key: value'")
        key = key.strip()
        if key.lower() not in _KNOWN:
            warnings.append(f"line {number}: unknown key {key!r}, ignored")
            continue
        canon = key.lower()
        if canon in values:
            warnings.append(f"line {number}: {key!r} appears twice; the first one counts")
            continue
        values[canon] = _value(raw)

    schedule = None
    if values.get("schedule", ""):
        try:
            schedule = CronSchedule.parse(values["schedule"])
        except CronError as exc:
            raise ValueError(f"schedule: {exc}") from None
    recurring_raw = values.get("recurring", values.get("daily", ""))
    recurring = _bool("recurring", recurring_raw) if recurring_raw else False
    notify_raw = values.get("notify", "").lower()
    notify: NotifyMode = "always"
    if notify_raw in _FALSE:
        notify = "never"
    elif notify_raw == "error":
        notify = "error"
    elif notify_raw and notify_raw not in _TRUE:
        raise ValueError(f"notify: {values['notify']!r} is not true, false or error")
    timeout = _seconds("timeout", values["timeout"]) if values.get("timeout") else None
    retry = 0
    if values.get("retry"):
        if not values["retry"].isdigit() or int(values["retry"]) > 10:
            raise ValueError(f"retry: {values['retry']!r} is not a whole number from 0 to 10")
        retry = int(values["retry"])
    retry_delay = (
        _seconds("retry_delay", values["retry_delay"]) if values.get("retry_delay") else 300.0
    )
    agent = values.get("agent", "")
    if agent:
        warnings.append(
            f"agent: {agent!r} is not supported (no per-agent directories); the job runs in "
            "the project directory with its own session"
        )
    if not body:
        raise ValueError("the prompt (the text after the second '---') is empty")
    prompt_file = None
    if names_prompt_file(body):
        candidate = Path(body)
        if candidate.is_absolute() or ".." in candidate.parts:
            raise ValueError(
                f"prompt file {body!r} must be a path inside the project (relative, no '..')"
            )
        prompt_file = candidate
    return Job(
        name=name,
        path=path,
        schedule=schedule,
        prompt=body,
        prompt_file=prompt_file,
        recurring=recurring,
        notify=notify,
        model=values.get("model", ""),
        timeout_s=timeout,
        retry=retry,
        retry_delay_s=retry_delay,
        agent=agent,
        label=values.get("label", ""),
        enabled=_bool("enabled", values["enabled"]) if values.get("enabled") else True,
        catch_up=_bool("catchUp", values["catchup"]) if values.get("catchup") else True,
        warnings=tuple(warnings),
    )


def load_jobs(directory: Path) -> tuple[list[Job], list[JobFileError]]:
    """Every ``*.md`` in ``directory`` (sorted by name); a missing directory has no jobs.

    Blocking file I/O: call it through ``asyncio.to_thread`` from the event loop.
    """
    jobs: list[Job] = []
    errors: list[JobFileError] = []
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix == ".md")
    except FileNotFoundError:
        return jobs, errors
    except OSError as exc:
        errors.append(
            JobFileError("", directory, f"cannot list the jobs directory: {exc.strerror}")
        )
        return jobs, errors
    for path in paths:
        name = path.stem
        try:
            if not path.is_file():
                raise ValueError("not a regular file")
            if path.stat().st_size > MAX_JOB_FILE_BYTES:
                raise ValueError(f"larger than {MAX_JOB_FILE_BYTES // 1024} KiB")
            text = path.read_text(encoding="utf-8")
            jobs.append(parse_job(name, text, path))
        except UnicodeDecodeError:
            errors.append(JobFileError(name, path, "not UTF-8 text; save it as UTF-8"))
        except OSError as exc:
            errors.append(JobFileError(name, path, f"cannot be read: {exc.strerror}"))
        except ValueError as exc:
            errors.append(JobFileError(name, path, str(exc)))
    return jobs, errors


def directory_stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """A cheap fingerprint of the job files (name, mtime, size): when it changes, the
    jobs are read again. Blocking; a missing directory is the empty stamp."""
    try:
        entries = sorted(p for p in directory.iterdir() if p.suffix == ".md")
    except OSError:
        return ()
    stamp: list[tuple[str, int, int]] = []
    for path in entries:
        try:
            info = path.stat()
        except OSError:
            continue
        stamp.append((path.name, info.st_mtime_ns, info.st_size))
    return tuple(stamp)
