"""systemd notifications: READY, STATUS, WATCHDOG, RELOADING, STOPPING (sd_notify(3)).

A tiny client of our own rather than the ``sdnotify`` package, which encodes as latin-1
(systemd drops a non-ASCII ``STATUS=`` as "not UTF-8 clean") and never unsets the
environment. Outside systemd (no ``$NOTIFY_SOCKET``) every method is a no-op, and no
method ever raises: a lost notification is logged at debug level and otherwise ignored,
because a daemon must not die over its status line.

Only the supervisor talks to systemd (the unit has ``NotifyAccess=main``). Worker and
``claude`` processes get an environment passed through :func:`child_env`, which removes
the variables that would make them think they are the service's main process.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping

from claudeclaw.logs import get_logger

# Variables systemd hands to the main process only; children must not inherit them.
SERVICE_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
# systemd only shows the first line of STATUS=; keep it short enough for `systemctl status`.
MAX_STATUS_CHARS = 400


def _debug(event: str, **fields: object) -> None:
    # Looked up per call: a logger bound at import time would keep the pre-configure set-up.
    get_logger(component="notify").debug(event, **fields)


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: ``os.environ``) without the service-only variables.

    ``LISTEN_FDNAMES`` goes too (it belongs to ``LISTEN_FDS``). ``JOURNAL_STREAM`` stays:
    a child that inherits our stderr may log to the journal natively, like we do.
    """
    source = os.environ if env is None else env
    drop = {*SERVICE_ONLY_ENV, "LISTEN_FDNAMES"}
    return {key: value for key, value in source.items() if key not in drop}


def _one_line(text: str) -> str:
    """Collapse whitespace (newlines included) and trim: STATUS= is a single line."""
    line = " ".join(text.split())
    if len(line) > MAX_STATUS_CHARS:
        line = line[: MAX_STATUS_CHARS - 1] + "…"
    return line


class Notifier:
    """Sends sd_notify(3) datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@`` abstract name).

    ``env`` defaults to ``os.environ`` and is read once, at construction. With
    ``unset_environment=True`` the service-only variables are also removed from
    ``os.environ`` so that anything started later cannot inherit them.
    """

    def __init__(
        self, env: Mapping[str, str] | None = None, *, unset_environment: bool = False
    ) -> None:
        source = os.environ if env is None else env
        self._address = self._parse_address(source.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = source.get("WATCHDOG_USEC", "")
        self._watchdog_pid = source.get("WATCHDOG_PID", "")
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        if unset_environment:
            for key in SERVICE_ONLY_ENV:
                os.environ.pop(key, None)

    @staticmethod
    def _parse_address(value: str) -> str | None:
        if value.startswith("@") and len(value) > 1:
            return "\0" + value[1:]  # Linux abstract namespace
        if value.startswith("/"):
            return value
        if value:
            _debug("notify.address_unsupported", address=value)
        return None

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notification socket."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments as one datagram. True if it was sent."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                _debug("notify.send_failed", error=str(exc), payload=assignments[0])
                self._close_locked()
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete: ``systemctl start`` returns now."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", "STATUS=" + _one_line(status))

    def reloading(self) -> bool:
        """A reload has begun; follow with :meth:`ready` (systemd 252: no MONOTONIC_USEC)."""
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        """Shutdown has begun."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """The one-line status shown by ``systemctl status`` (UTF-8, trimmed)."""
        return self.notify("STATUS=" + _one_line(text))

    def watchdog(self) -> bool:
        """Keep-alive ping; send every :meth:`watchdog_interval` seconds from the event loop."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time for the current start, stop or reload job."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """Half of ``$WATCHDOG_USEC`` in seconds, or None when the watchdog is not ours.

        Like sd_watchdog_enabled(3): ``$WATCHDOG_PID``, when set, must be our pid.
        """
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 2_000_000

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
