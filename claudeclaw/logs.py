"""structlog set-up: readable lines on a terminal, journald entries under systemd, JSON otherwise.

Every event is a dotted fact in the past tense (``worker.spawned``) with fields; context
such as ``thread_id``/``session_id``/``run_id`` is bound with :func:`bind` and rides along.
Secrets registered with :func:`register_secret` are replaced by ``[redacted]`` wherever
they appear in an event, so a token pasted into an error message never reaches a log.

Modes (``configure_logging(mode=...)``):

``console``
    readable lines on stderr (the default on a terminal).
``json``
    one JSON object per line on stderr (the default when stderr is a pipe or a file).
``journal``
    one journald entry per event, sent over journald's native protocol: ``MESSAGE`` is a
    readable line (with the traceback, if any, inside the same entry), ``PRIORITY`` comes
    from the level, and every event field whose name is a plain identifier becomes an
    upper-case journal field (``thread_id`` → ``THREAD_ID``), so
    ``journalctl -u claudeclaw THREAD_ID=…`` works. If the journal socket cannot be used,
    the event goes to stderr as JSON with an sd-daemon ``<N>`` priority prefix instead.
``auto``
    ``journal`` when stderr *is* the stream systemd connected to the journal
    (``$JOURNAL_STREAM`` equals the device:inode of fd 2; the variable alone is not
    enough, a child may have inherited it with other stderr), else console on a
    terminal, else JSON.

Worker processes call :func:`configure_logging` too (``process="worker"``); with the
supervisor's stderr inherited they detect the journal the same way, and their entries are
attributed to the service by journald (same cgroup) while carrying ``PROCESS=worker``.
"""

from __future__ import annotations

import array
import contextlib
import contextvars
import errno
import fcntl
import json
import logging
import os
import re
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, MutableMapping
from types import FrameType, TracebackType
from typing import IO, Any, Literal, TextIO

import structlog

from claudeclaw.jsonwalk import map_strings
from claudeclaw.redaction import register_secret as register_secret  # re-exported
from claudeclaw.redaction import scrub

LogMode = Literal["auto", "console", "json", "journal"]

JOURNAL_SOCKET = "/run/systemd/journal/socket"
JOURNAL_SOCKET_ENV = "CLAUDECLAW_JOURNAL_SOCKET"  # tests point this at a fake journal
SYSLOG_IDENTIFIER = "claudeclaw"

# structlog level -> syslog priority (sd-daemon(3)).
PRIORITIES: dict[str, int] = {
    "critical": 2,
    "fatal": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}

_SECRET_KEYS = frozenset({"token", "api", "api_key", "authorization", "password"})
_PLAIN_VALUES = (int, float, type(None))  # nothing to scrub in them (bool is an int)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: drop secret-named keys, scrub registered secret values (a
    plain string or number, most fields, skips the generic walk: every line pays this)."""
    for key, value in list(event_dict.items()):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
        elif type(value) is str:
            event_dict[key] = scrub(value)
        elif not isinstance(value, _PLAIN_VALUES):
            event_dict[key] = map_strings(value, scrub)
    return event_dict


def _add_pid(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _add_thread_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Every event about a thread's session carries ``thread_id``, whichever process logged
    it, so ``journalctl -u claudeclaw THREAD_ID=<id>`` finds all of them."""
    key = event_dict.get("session_key")
    if isinstance(key, str) and key.isdigit():
        event_dict.setdefault("thread_id", key)
    elif isinstance(key, str) and key.startswith("job:"):
        event_dict.setdefault("job_name", key[4:])  # JOB_NAME=<name> in the journal
    return event_dict


# --------------------------------------------------------------------------- detection


def journal_stream_matches(fd: int = 2, env: MutableMapping[str, str] | None = None) -> bool:
    """True if ``fd`` is the stream systemd connected to the journal (``$JOURNAL_STREAM``).

    systemd.exec(5): compare the variable's ``<dev>:<inode>`` with ``fstat(fd)``; a
    process that inherited the variable with a different stderr must not assume journald.
    """
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        info = os.fstat(fd)
        return (int(dev), int(ino)) == (info.st_dev, info.st_ino)
    except (OSError, ValueError):
        return False


def _detect_mode() -> Literal["console", "json", "journal"]:
    if journal_stream_matches(2):
        return "journal"
    try:
        return "console" if sys.stderr.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


# --------------------------------------------------------------------------- call site


def _is_logging_module(module: str) -> bool:
    return module == "logging" or module.startswith(("structlog", "logging.")) or module == __name__


def _add_callsite(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Record the logging call site (file, line, function) for CODE_FILE/LINE/FUNC."""
    if "code_file" in event_dict:  # stdlib records bring their own
        return event_dict
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if not _is_logging_module(frame.f_globals.get("__name__", "")):
            event_dict["code_file"] = frame.f_code.co_filename
            event_dict["code_line"] = frame.f_lineno
            event_dict["code_func"] = frame.f_code.co_name
            break
        frame = frame.f_back
    return event_dict


# --------------------------------------------------------------------------- journal

_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# Fields we set ourselves; an event key with one of these names is renamed, not dropped.
_RESERVED = frozenset(
    {
        "MESSAGE",
        "MESSAGE_ID",
        "PRIORITY",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
        "SYSLOG_IDENTIFIER",
        "SYSLOG_FACILITY",
        "SYSLOG_PID",
        "SYSLOG_TIMESTAMP",
        "ERRNO",
        "DOCUMENTATION",
        "TID",
        "UNIT",
        "USER_UNIT",
        "INVOCATION_ID",
        "OBJECT_PID",
        "COREDUMP_UNIT",
    }
)
# Keys not repeated in the readable MESSAGE line (they have their own journal fields).
_NOT_IN_MESSAGE = frozenset(
    {"event", "level", "timestamp", "pid", "exception", "code_file", "code_line", "code_func"}
)
# Keys that do not become fields of their own.
_NOT_A_FIELD = frozenset({"level", "timestamp", "exception", "code_file", "code_line", "code_func"})
MAX_FIELD_BYTES = 64 * 1024  # per value, only when even a memfd could not carry the entry


_NEEDS_QUOTES = re.compile(r'[\s"]')  # (\s: what str.isspace calls whitespace)


def _text(value: Any) -> str:
    """A field's value as text: as JSON would write it, strings as they are."""
    if isinstance(value, str):
        return value
    if type(value) is int:  # (the common case, without the encoder's machinery)
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _message_line(event_dict: MutableMapping[str, Any]) -> str:
    parts = [str(event_dict.get("event", ""))]
    for key, value in event_dict.items():
        if key in _NOT_IN_MESSAGE or value is None:
            continue
        text = _text(value)
        if not text or _NEEDS_QUOTES.search(text):
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def journal_fields(method_name: str, event_dict: MutableMapping[str, Any]) -> list[tuple[str, str]]:
    """The journal entry for one event: ``[(FIELD, value), ...]``, MESSAGE first."""
    level = str(event_dict.get("level", method_name)).lower()
    priority = PRIORITIES.get(level, 6)
    message = _message_line(event_dict)
    exception = event_dict.get("exception")
    if exception:
        message = message + "\n" + str(exception).rstrip("\n")
    fields: list[tuple[str, str]] = [
        ("MESSAGE", message),
        ("PRIORITY", str(priority)),
        ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER),
    ]
    if "code_file" in event_dict:
        fields.append(("CODE_FILE", str(event_dict["code_file"])))
        fields.append(("CODE_LINE", str(event_dict.get("code_line", ""))))
        fields.append(("CODE_FUNC", str(event_dict.get("code_func", ""))))
    if exception:
        first = str(exception).rstrip("\n").rsplit("\n", 1)[-1]
        fields.append(("EXCEPTION", first))
    for key, value in event_dict.items():
        if key in _NOT_A_FIELD or value is None or not _FIELD_NAME.fullmatch(key):
            continue
        name = key.upper()
        if name in _RESERVED or name == "EXCEPTION":
            name = "CLAUDECLAW_" + name
            if len(name) > 64:
                continue
        fields.append((name, _text(value)))
    return fields


def encode_journal_entry(fields: Iterable[tuple[str, str]]) -> bytes:
    """journald native protocol: ``KEY=value\\n``, or the length-prefixed binary form."""
    out = bytearray()
    for key, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode("ascii") + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode("ascii") + b"=" + data + b"\n"
    return bytes(out)


def _truncated(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in fields:
        if len(value.encode("utf-8", "replace")) > MAX_FIELD_BYTES:
            raw = value.encode("utf-8", "replace")[:MAX_FIELD_BYTES].decode("utf-8", "ignore")
            value = raw + f"\n[truncated: {len(value)} characters in all]"
        out.append((key, value))
    return out


class JournalSender:
    """One datagram per entry to journald's socket; big entries go as a sealed memfd."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ.get(JOURNAL_SOCKET_ENV) or JOURNAL_SOCKET
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def send(self, fields: list[tuple[str, str]]) -> None:
        """Send one entry; raises OSError if journald cannot be reached."""
        data = encode_journal_entry(fields)
        with self._lock:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # a stalled journald must not stall the event loop for long: after this the
                # entry goes to stderr instead (the journal's stream, or the terminal)
                sock.settimeout(0.25)
                self._sock = sock
            try:
                self._sock.sendto(data, self.path)
                return
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):  # too big for a datagram
                    self._close()
                    raise
            try:
                self._send_memfd(data)
            except OSError:
                self._sock.sendto(encode_journal_entry(_truncated(fields)), self.path)

    def _send_memfd(self, data: bytes) -> None:
        assert self._sock is not None
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = array.array("i", [fd]).tobytes()
            self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, self.path)
        finally:
            os.close(fd)

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


class JournalEntry:
    """What the journal renderer hands to :class:`JournalLogger`."""

    __slots__ = ("event_dict", "fields", "priority")

    def __init__(
        self, fields: list[tuple[str, str]], priority: int, event_dict: dict[str, Any]
    ) -> None:
        self.fields = fields
        self.priority = priority
        self.event_dict = event_dict


def journal_renderer(
    _logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[JournalEntry], dict[str, Any]]:
    """Final structlog processor in journal mode."""
    fields = journal_fields(method_name, event_dict)
    return (JournalEntry(fields, int(fields[1][1]), dict(event_dict)),), {}


class JournalLogger:
    """structlog logger: sends entries to journald, or ``<N>``-prefixed JSON to a stream."""

    def __init__(self, sender: JournalSender, fallback: IO[str] | None = None) -> None:
        self._sender = sender
        self._fallback = fallback
        self._lock = threading.Lock()

    def msg(self, entry: JournalEntry | str) -> None:
        if isinstance(entry, str):  # not rendered by us (someone else's processor chain)
            self._write(f"<6>{entry}")
            return
        try:
            self._sender.send(entry.fields)
        except OSError:
            event = dict(entry.event_dict)
            event.pop("code_file", None)
            event.pop("code_line", None)
            event.pop("code_func", None)
            line = json.dumps(event, default=str, ensure_ascii=False)
            self._write(f"<{entry.priority}>{line}")

    def _write(self, line: str) -> None:
        stream = self._fallback if self._fallback is not None else sys.stderr
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


# --------------------------------------------------------------------------- stdlib + hooks


class _ForwardToStructlog(logging.Handler):
    """Routes stdlib ``logging`` records (discord.py, asyncio) through structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {
                "logger": record.name,
                "code_file": record.pathname,
                "code_line": record.lineno,
                "code_func": record.funcName,
            }
            if record.exc_info and record.exc_info[0] is not None:
                fields["exc_info"] = record.exc_info
            log = structlog.get_logger()
            level = record.levelname.lower()
            method: Callable[..., Any] = getattr(log, level, log.info)
            method(record.getMessage(), **fields)
        except Exception:  # a broken log line must not break the caller
            self.handleError(record)


class _QuietVoiceWarnings(logging.Filter):
    """discord.py warns on every start that voice support (PyNaCl, davey) is missing; a
    text bot never needs it, so those lines become debug, not ``journalctl -p warning``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("discord") and "voice will NOT be supported" in str(record.msg):
            record.levelno = logging.DEBUG
            record.levelname = "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    try:
        structlog.get_logger().critical("process.uncaught_exception", exc_info=(exc_type, exc, tb))
    except Exception:  # last resort: the interpreter's own printout
        sys.__excepthook__(exc_type, exc, tb)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    try:
        structlog.get_logger().critical(
            "thread.uncaught_exception",
            thread=args.thread.name if args.thread is not None else None,
            exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
        )
    except Exception:
        traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback)


# --------------------------------------------------------------------------- configure


def configure_logging(
    *,
    level: str = "info",
    mode: LogMode = "auto",
    process: str = "supervisor",
    journal_socket: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for this process (call once, early; workers call it too).

    ``journal_socket`` overrides the journald socket path (also ``$CLAUDECLAW_JOURNAL_SOCKET``);
    ``stream`` replaces stderr as the output of the console/JSON modes and the journal
    fallback. Also routes stdlib ``logging`` through structlog and installs
    ``sys.excepthook``/``threading.excepthook`` so uncaught exceptions become one event.
    """
    resolved = _detect_mode() if mode == "auto" else mode
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    out: TextIO = stream if stream is not None else sys.stderr
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_pid,
        _add_thread_id,
    ]
    logger_factory: Callable[..., Any]
    if resolved == "journal":
        sender = JournalSender(journal_socket)
        journal_logger = JournalLogger(sender, stream)
        processors += [
            _add_callsite,
            redact_secrets,
            structlog.processors.format_exc_info,
            journal_renderer,
        ]

        def logger_factory(*_args: Any) -> JournalLogger:
            return journal_logger

    else:
        renderer: Any
        if resolved == "console":
            renderer = structlog.dev.ConsoleRenderer(colors=False)
        else:
            renderer = structlog.processors.JSONRenderer(sort_keys=False)
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ]
        logger_factory = structlog.PrintLoggerFactory(out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(process=process)
    _install_stdlib_forwarding(numeric_level)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook


def _install_stdlib_forwarding(numeric_level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ForwardToStructlog):
            root.removeHandler(handler)
    handler = _ForwardToStructlog(level=numeric_level)
    handler.addFilter(_QuietVoiceWarnings())
    root.addHandler(handler)
    root.setLevel(numeric_level)


def get_logger(**initial: Any) -> Any:
    """A logger; ``initial`` fields are attached to every event it logs.

    Safe to call at import time: the configuration is looked up when it logs.
    """
    return structlog.get_logger(**initial)


def bind(**fields: Any) -> None:
    """Attach fields to every event logged from the current task/context."""
    structlog.contextvars.bind_contextvars(**fields)


def context_without(*keys: str) -> contextvars.Context:
    """A copy of the current context without the :func:`bind` fields ``keys``: for a task
    that outlives what they name (a warm ``claude``'s reader, started for one message)."""
    context = contextvars.copy_context()
    context.run(structlog.contextvars.unbind_contextvars, *keys)
    return context


def unbind(*keys: str) -> None:
    """Drop fields :func:`bind` added (a worker recycled as the spare names no key)."""
    structlog.contextvars.unbind_contextvars(*keys)
