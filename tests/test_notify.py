"""claudeclaw.notify against a real AF_UNIX datagram socket (path and abstract)."""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from claudeclaw.notify import Notifier, child_env


class FakeNotifySocket:
    """What systemd's notify socket looks like: a bound datagram socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.sock.settimeout(2.0)
        self.address = address

    def recv(self) -> str:
        return self.sock.recv(65536).decode("utf-8")

    def pending(self) -> list[str]:
        self.sock.setblocking(False)
        out: list[str] = []
        try:
            while True:
                out.append(self.sock.recv(65536).decode("utf-8"))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(2.0)


@pytest.fixture
def path_socket() -> Iterator[FakeNotifySocket]:
    # Short directory under /tmp: AF_UNIX paths are limited to 108 bytes.
    directory = tempfile.mkdtemp(prefix="ccn-", dir="/tmp")
    fake = FakeNotifySocket(os.path.join(directory, "notify"))
    yield fake
    fake.sock.close()
    Path(fake.address).unlink(missing_ok=True)
    os.rmdir(directory)


@pytest.fixture
def abstract_socket() -> Iterator[FakeNotifySocket]:
    fake = FakeNotifySocket("@claudeclaw-test-" + uuid.uuid4().hex)
    yield fake
    fake.sock.close()


def test_ready_with_status_is_one_datagram(path_socket: FakeNotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": path_socket.address})
    assert notifier.enabled
    assert notifier.ready("2 threads active, 1 running, 0 queued")
    assert path_socket.recv() == "READY=1\nSTATUS=2 threads active, 1 running, 0 queued"
    assert path_socket.pending() == []


def test_abstract_address(abstract_socket: FakeNotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": abstract_socket.address})
    assert notifier.ready()
    assert abstract_socket.recv() == "READY=1"


def test_every_message_kind(path_socket: FakeNotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": path_socket.address})
    notifier.reloading()
    notifier.ready("reloaded")
    notifier.watchdog()
    notifier.stopping()
    notifier.extend_timeout(2.5)
    assert [path_socket.recv() for _ in range(5)] == [
        "RELOADING=1",
        "READY=1\nSTATUS=reloaded",
        "WATCHDOG=1",
        "STOPPING=1",
        "EXTEND_TIMEOUT_USEC=2500000",
    ]


def test_status_is_utf8_and_one_trimmed_line(path_socket: FakeNotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": path_socket.address})
    notifier.status("  café ✓ 3 threads\nsecond line\r\n  ")
    raw = path_socket.sock.recv(65536)
    assert raw == "STATUS=café ✓ 3 threads second line".encode()
    notifier.status("x" * 5000)
    long = path_socket.recv()
    assert len(long) < 500 and long.endswith("…") and "\n" not in long


def test_socket_is_close_on_exec(path_socket: FakeNotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": path_socket.address})
    notifier.watchdog()
    path_socket.recv()
    assert notifier._sock is not None
    assert fcntl.fcntl(notifier._sock.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_noop_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None


@pytest.mark.parametrize("address", ["/nonexistent/claudeclaw/notify", "relative/path", "@"])
def test_never_raises_on_bad_address(address: str) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.ready("x") is False
    assert notifier.stopping() is False
    notifier.close()


def test_recovers_after_a_failed_send(tmp_path: Path) -> None:
    directory = tempfile.mkdtemp(prefix="ccn-", dir="/tmp")
    address = os.path.join(directory, "notify")
    try:
        notifier = Notifier({"NOTIFY_SOCKET": address})
        assert notifier.watchdog() is False  # nobody listening yet
        fake = FakeNotifySocket(address)
        assert notifier.watchdog() is True
        assert fake.recv() == "WATCHDOG=1"
        fake.sock.close()
    finally:
        Path(address).unlink(missing_ok=True)
        os.rmdir(directory)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(env).watchdog_interval() == expected


def test_child_env_strips_service_only_variables() -> None:
    env = {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": "12",
        "LISTEN_FDS": "1",
        "LISTEN_PID": "12",
        "LISTEN_FDNAMES": "control",
        "JOURNAL_STREAM": "8:1234",
        "HOME": "/var/lib/claudeclaw",
        "PATH": "/usr/bin",
    }
    original = dict(env)
    assert child_env(env) == {
        "JOURNAL_STREAM": "8:1234",
        "HOME": "/var/lib/claudeclaw",
        "PATH": "/usr/bin",
    }
    assert env == original  # not mutated


def test_child_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@x")
    monkeypatch.setenv("CLAUDECLAW_MARKER", "1")
    env = child_env()
    assert "NOTIFY_SOCKET" not in env and env["CLAUDECLAW_MARKER"] == "1"


def test_unset_environment(monkeypatch: pytest.MonkeyPatch, path_socket: FakeNotifySocket) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier(unset_environment=True)
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    assert notifier.watchdog_interval() == 2.0
    assert notifier.ready()
    assert path_socket.recv() == "READY=1"
