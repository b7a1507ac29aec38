"""claudeclaw.logs: journald native protocol (captured by a fake journal socket), JSON lines."""

from __future__ import annotations

import array
import io
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from claudeclaw import logs
from claudeclaw.logs import configure_logging, encode_journal_entry, get_logger

Entry = dict[str, list[str]]


def parse_entry(data: bytes) -> Entry:
    """Parse one native-protocol datagram (``KEY=value\\n`` and the binary-length form)."""
    fields: Entry = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            value = data[nl + 9 : nl + 9 + size]
            assert data[nl + 9 + size : nl + 10 + size] == b"\n", "binary field not terminated"
            i = nl + 10 + size
        fields.setdefault(key.decode("ascii"), []).append(value.decode("utf-8"))
    return fields


class FakeJournal:
    """A datagram socket standing in for /run/systemd/journal/socket (memfd entries too)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ccj-", dir="/tmp")
        self.path = os.path.join(self.dir, "socket")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        fds_size = socket.CMSG_SPACE(array.array("i", [0]).itemsize)
        while True:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(1 << 20, fds_size)
            except BlockingIOError:
                return out
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    (fd,) = array.array("i", payload[: array.array("i").itemsize])
                    with os.fdopen(fd, "rb") as memfd:
                        memfd.seek(0)
                        data = memfd.read()
            out.append(parse_entry(data))

    def close(self) -> None:
        self.sock.close()
        Path(self.path).unlink(missing_ok=True)
        os.rmdir(self.dir)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    hook, thread_hook = sys.excepthook, threading.excepthook
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    sys.excepthook, threading.excepthook = hook, thread_hook
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def journal() -> Iterator[FakeJournal]:
    fake = FakeJournal()
    yield fake
    fake.close()


def one(entries: list[Entry]) -> Entry:
    assert len(entries) == 1, entries
    return entries[0]


def field(entry: Entry, name: str) -> str:
    values = entry[name]
    assert len(values) == 1, (name, values)
    return values[0]


# --------------------------------------------------------------------------- journal mode


def test_event_is_one_entry_with_queryable_fields(journal: FakeJournal) -> None:
    configure_logging(mode="journal", process="worker", journal_socket=journal.path)
    logs.bind(thread_id="123456789012345678", session_id="0f8e-aa", run_id="r1")
    get_logger(msg_id="987").info("run.started", worker_pid=4242, prompt_chars=12)
    entry = one(journal.entries())
    assert field(entry, "PRIORITY") == "6"
    assert field(entry, "SYSLOG_IDENTIFIER") == "claudeclaw"
    assert field(entry, "EVENT") == "run.started"
    assert field(entry, "PROCESS") == "worker"
    assert field(entry, "THREAD_ID") == "123456789012345678"
    assert field(entry, "SESSION_ID") == "0f8e-aa"
    assert field(entry, "RUN_ID") == "r1"
    assert field(entry, "MSG_ID") == "987"
    assert field(entry, "WORKER_PID") == "4242"
    assert field(entry, "PID") == str(os.getpid())
    message = field(entry, "MESSAGE")
    assert message.startswith("run.started ")
    assert "thread_id=123456789012345678" in message and "worker_pid=4242" in message
    assert field(entry, "CODE_FILE") == __file__
    assert field(entry, "CODE_FUNC") == "test_event_is_one_entry_with_queryable_fields"
    assert int(field(entry, "CODE_LINE")) > 0
    assert "LEVEL" not in entry and "TIMESTAMP" not in entry


def test_the_message_line_quotes_what_has_whitespace_or_quotes_and_values_read_as_json() -> None:
    """Values in MESSAGE and in their own fields read as JSON would write them (strings
    bare); a value with any whitespace str.isspace knows, or a quote, is quoted."""
    fields = dict(
        logs.journal_fields(
            "info",
            {
                "event": "x.y",
                "n": 42,
                "flag": True,
                "ratio": 0.5,
                "none_here": None,
                "empty": "",
                "plain": "abc",
                "spaced": "a b",
                "nbsp": "a\u00a0b",
                "sep": "a\x1cb",
                "quote": 'say "hi"',
                "items": [1, "two"],
            },
        )
    )
    assert fields["MESSAGE"] == (
        'x.y n=42 flag=true ratio=0.5 empty="" plain=abc spaced="a b" nbsp="a\u00a0b" '
        'sep="a\\u001cb" quote="say \\"hi\\"" items="[1, \\"two\\"]"'
    )
    assert (fields["N"], fields["FLAG"], fields["RATIO"]) == ("42", "true", "0.5")
    assert fields["ITEMS"] == '[1, "two"]' and fields["NBSP"] == "a\u00a0b"
    quoted = {c for c in map(chr, range(0x110000)) if logs._NEEDS_QUOTES.search(c)}
    assert quoted == {c for c in map(chr, range(0x110000)) if c.isspace() or c == '"'}


@pytest.mark.parametrize(
    ("method", "priority"),
    [("debug", "7"), ("info", "6"), ("warning", "4"), ("error", "3"), ("critical", "2")],
)
def test_priority_per_level(journal: FakeJournal, method: str, priority: str) -> None:
    configure_logging(mode="journal", level="debug", journal_socket=journal.path)
    getattr(get_logger(), method)("thing.happened")
    assert field(one(journal.entries()), "PRIORITY") == priority


def test_level_filter_applies(journal: FakeJournal) -> None:
    configure_logging(mode="journal", level="info", journal_socket=journal.path)
    get_logger().debug("noise.ignored")
    assert journal.entries() == []


def test_traceback_is_inside_one_entry(journal: FakeJournal) -> None:
    configure_logging(mode="journal", journal_socket=journal.path)
    try:
        raise ValueError("bad thing\nwith two lines")
    except ValueError:
        get_logger().exception("run.crashed", thread_id="42")
    entry = one(journal.entries())
    assert field(entry, "PRIORITY") == "3"
    message = field(entry, "MESSAGE")
    assert message.startswith("run.crashed thread_id=42 process=supervisor\nTraceback (most recent")
    assert "raise ValueError" in message and message.rstrip().endswith("with two lines")
    assert field(entry, "EXCEPTION") == "with two lines"
    assert field(entry, "THREAD_ID") == "42"


def test_secrets_are_redacted(journal: FakeJournal) -> None:
    secret = "MTIzNDU2.discord.token.value"
    logs.register_secret(secret)
    configure_logging(mode="journal", journal_socket=journal.path)
    get_logger().warning("login.failed", token=secret, detail=f"server said {secret}")
    entry = one(journal.entries())
    raw = json.dumps(entry)
    assert secret not in raw
    assert field(entry, "TOKEN") == "[redacted]"
    assert field(entry, "DETAIL") == "server said [redacted]"


def test_field_names(journal: FakeJournal) -> None:
    configure_logging(mode="journal", journal_socket=journal.path)
    get_logger().info(
        "odd.fields",
        message="user text",
        priority="high",
        **{"not-an-identifier": 1, "_private": 2},
        nested={"a": [1, 2]},
        flag=True,
        nothing=None,
    )
    entry = one(journal.entries())
    assert field(entry, "CLAUDECLAW_MESSAGE") == "user text"
    assert field(entry, "CLAUDECLAW_PRIORITY") == "high"
    assert field(entry, "PRIORITY") == "6"
    assert field(entry, "NESTED") == '{"a": [1, 2]}'
    assert field(entry, "FLAG") == "true"
    assert "NOTHING" not in entry and "_PRIVATE" not in entry
    assert all(name.isupper() or name[0].isupper() for name in entry)
    assert "not-an-identifier=1" in field(entry, "MESSAGE")


def test_values_with_newlines_use_the_binary_form() -> None:
    data = encode_journal_entry([("MESSAGE", "a\nb"), ("PRIORITY", "6")])
    assert data == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\nPRIORITY=6\n"
    assert parse_entry(data) == {"MESSAGE": ["a\nb"], "PRIORITY": ["6"]}


def test_oversized_entry_goes_as_memfd(journal: FakeJournal) -> None:
    configure_logging(mode="journal", journal_socket=journal.path)
    big = "x" * (2 * 1024 * 1024)
    get_logger().info("big.event", blob=big)
    entry = one(journal.entries())
    assert field(entry, "BLOB") == big


def test_fallback_to_prefixed_json_when_journal_is_unreachable() -> None:
    out = io.StringIO()
    configure_logging(mode="journal", journal_socket="/nonexistent/journal", stream=out)
    get_logger().error("send.failed", thread_id="7")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("<3>{")
    event = json.loads(lines[0][3:])
    assert event["event"] == "send.failed" and event["thread_id"] == "7"
    assert "code_file" not in event


def test_stdlib_logging_is_forwarded(journal: FakeJournal) -> None:
    configure_logging(mode="journal", journal_socket=journal.path)
    logging.getLogger("discord.gateway").warning("Shard %s is lagging", 0)
    entry = one(journal.entries())
    assert field(entry, "PRIORITY") == "4"
    assert field(entry, "LOGGER") == "discord.gateway"
    assert field(entry, "EVENT") == "Shard 0 is lagging"
    assert field(entry, "CODE_FILE") == __file__


def test_discord_voice_warnings_stay_below_warning(journal: FakeJournal) -> None:
    """Issue 12.10: discord.py's "PyNaCl/davey is not installed, voice will NOT be
    supported" on every start must not reach ``journalctl -p warning``."""
    configure_logging(mode="journal", journal_socket=journal.path)
    client = logging.getLogger("discord.client")
    client.warning("PyNaCl is not installed, voice will NOT be supported")
    client.warning("davey is not installed, voice will NOT be supported")
    client.warning("something else")
    entry = one(journal.entries())
    assert field(entry, "EVENT") == "something else" and field(entry, "PRIORITY") == "4"
    configure_logging(mode="journal", journal_socket=journal.path, level="debug")
    client.warning("davey is not installed, voice will NOT be supported")
    assert field(one(journal.entries()), "PRIORITY") == "7"


# --------------------------------------------------------------------------- json / detection


def test_json_mode_is_one_object_per_line() -> None:
    out = io.StringIO()
    configure_logging(mode="json", stream=out, process="supervisor")
    log = get_logger(thread_id="1")
    log.info("a.happened", n=1)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("b.failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "a.happened" and first["thread_id"] == "1"
    assert first["level"] == "info" and first["process"] == "supervisor"
    assert second["level"] == "error" and "RuntimeError: boom" in second["exception"]


def test_journal_stream_must_match_stderr(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as fh:
        info = os.fstat(fh.fileno())
        good = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert logs.journal_stream_matches(fh.fileno(), good)
        assert not logs.journal_stream_matches(fh.fileno(), {"JOURNAL_STREAM": "1:2"})
        assert not logs.journal_stream_matches(fh.fileno(), {"JOURNAL_STREAM": "junk"})
        assert not logs.journal_stream_matches(fh.fileno(), {})


CHILD = textwrap.dedent(
    """
    import sys
    from claudeclaw.logs import configure_logging, get_logger
    configure_logging(process="worker")
    get_logger().info("child.started", thread_id="555")
    raise KeyError("uncaught")
    """
)


def _run_child(tmp_path: Path, journal: FakeJournal, *, matching: bool) -> str:
    stderr_path = tmp_path / "stderr"
    with open(stderr_path, "w") as err:
        info = os.fstat(err.fileno())
        stream = f"{info.st_dev}:{info.st_ino}" if matching else f"{info.st_dev}:1"
        env = dict(os.environ, JOURNAL_STREAM=stream, CLAUDECLAW_JOURNAL_SOCKET=journal.path)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD],
            stderr=err,
            stdout=subprocess.DEVNULL,
            env=env,
            timeout=60,
        )
    assert proc.returncode == 1
    return stderr_path.read_text()


def test_auto_mode_uses_the_journal_when_stderr_is_the_journal_stream(
    tmp_path: Path, journal: FakeJournal
) -> None:
    stderr = _run_child(tmp_path, journal, matching=True)
    assert stderr == ""
    started, crashed = journal.entries()
    assert field(started, "THREAD_ID") == "555" and field(started, "PROCESS") == "worker"
    assert field(crashed, "EVENT") == "process.uncaught_exception"
    assert field(crashed, "PRIORITY") == "2"
    assert "KeyError: 'uncaught'" in field(crashed, "MESSAGE")
    assert "Traceback" in field(crashed, "MESSAGE")


def test_auto_mode_ignores_an_inherited_journal_stream(
    tmp_path: Path, journal: FakeJournal
) -> None:
    stderr = _run_child(tmp_path, journal, matching=False)
    assert journal.entries() == []
    lines = stderr.splitlines()
    assert len(lines) == 2, stderr  # JSON: one object per event, traceback inside
    events = [json.loads(line) for line in lines]
    assert events[0]["event"] == "child.started"
    assert events[1]["event"] == "process.uncaught_exception"
    assert "KeyError" in events[1]["exception"]


def test_get_logger_at_import_time_follows_later_configuration(journal: FakeJournal) -> None:
    early = get_logger(component="early")  # like a module-level logger
    configure_logging(mode="journal", journal_socket=journal.path)
    early.info("late.event")
    assert field(one(journal.entries()), "COMPONENT") == "early"


def test_thread_sessions_get_a_thread_id_field(journal: FakeJournal) -> None:
    """A supervisor or bot event about a thread's session is found by THREAD_ID too."""
    configure_logging(mode="journal", journal_socket=journal.path)
    get_logger().info("message.submitted", session_key="123456789012345678")
    get_logger().info("message.submitted", session_key="global")
    first, second = journal.entries()
    assert field(first, "THREAD_ID") == "123456789012345678"
    assert "THREAD_ID" not in second


def test_job_session_keys_become_job_name(journal: FakeJournal) -> None:
    configure_logging(mode="journal", process="supervisor", journal_socket=journal.path)
    get_logger().info("message.submitted", session_key="job:daily-report")
    entry = one(journal.entries())
    assert field(entry, "JOB_NAME") == "daily-report"
    assert "THREAD_ID" not in entry
