"""The daemon's control socket, and the client the ``claudeclaw`` command uses.

The socket lives in the private runtime directory (0700) with mode 0600, and every
connection's peer credentials are checked: only our own uid (or root) may talk to it. A
request is one frame; the answer is one ``result``/``error`` frame, or for ``send`` a
stream of ``event`` frames ending with the run's final event.

A running daemon advertises the socket in ``<state>/daemon.json``, so ``claudeclaw status``
finds it even when systemd chose the runtime directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from claudeclaw import ipc
from claudeclaw.errors import DaemonNotRunning, IpcError, StateError
from claudeclaw.logs import get_logger
from claudeclaw.paths import ProjectPaths

log = get_logger()

Handler = Callable[[ipc.Message, ipc.Channel], Awaitable[None]]


class ControlServer:
    """Accepts control connections and hands each checked request to ``handler``."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await ipc.listen(self.path, self._on_connect)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        channel = ipc.Channel(reader, writer)
        try:
            pid, uid, _ = channel.peer_credentials()
            if uid not in (os.getuid(), 0):
                log.warning("control.refused", peer_pid=pid, peer_uid=uid)
                await channel.send({"type": "error", "message": "permission denied"})
                return
            request = await channel.recv()
            if request is None:
                return
            await self.handler(request, channel)
        except IpcError as exc:
            log.error("control.bad_frame", error=str(exc))
            with contextlib.suppress(ConnectionError, IpcError):
                await channel.send({"type": "error", "message": f"bad request: {exc}"})
        except ConnectionError:
            pass
        except Exception as exc:  # a failing command must not take the daemon down
            log.exception("control.handler_failed")
            with contextlib.suppress(ConnectionError, IpcError):
                await channel.send({"type": "error", "message": f"internal error: {exc}"})
        finally:
            await channel.close()
            if task is not None:
                self._connections.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# ---- client ---------------------------------------------------------------------------


def _owner_of(path: Path) -> str:
    """The user owning ``path`` or its nearest ancestor we may look at ("" if unknown)."""
    for candidate in (path, *path.parents):
        try:
            uid = candidate.stat().st_uid
        except OSError:
            continue
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)
    return ""


def permission_denied(what: Path, paths: ProjectPaths) -> StateError:
    """The error for a project whose files this user may not read: says whose they are."""
    owner = _owner_of(what) or "its owner"
    return StateError(
        f"permission denied: {what} of project {paths.root} belongs to {owner}; run the "
        f"command as that user (`sudo -u {owner} claudeclaw …`) or as root"
    )


def read_daemon_info(paths: ProjectPaths) -> dict[str, Any] | None:
    """What the running daemon wrote into daemon.json, or None.

    Raises StateError when the file is there but not ours to read (another user's
    daemon): "not running" would be the wrong answer.
    """
    try:
        info = json.loads(paths.daemon_file.read_text(encoding="utf-8"))
    except PermissionError:
        raise permission_denied(paths.daemon_file, paths) from None
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None
    return info if isinstance(info, dict) else None


def control_socket_path(paths: ProjectPaths) -> Path:
    info = read_daemon_info(paths)
    if info and isinstance(info.get("control_socket"), str):
        return Path(info["control_socket"])
    return paths.runtime_dir() / "control.sock"


async def _connect(paths: ProjectPaths) -> ipc.Channel:
    path = control_socket_path(paths)
    try:
        return await ipc.Channel.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DaemonNotRunning(
            f"the claudeclaw daemon for {paths.root} is not running "
            f"(no answer on {path}); start it with `claudeclaw run` or `systemctl start claudeclaw`"
        ) from exc
    except PermissionError:
        raise permission_denied(path, paths) from None


async def request(
    paths: ProjectPaths, message: ipc.Message, reply_within: float = 60.0
) -> ipc.Message:
    """Send one request and return its ``result`` frame (``error`` frames raise IpcError)."""
    channel = await _connect(paths)
    try:
        await channel.send(message)
        reply = await asyncio.wait_for(channel.recv(), reply_within)
    finally:
        await channel.close()
    if reply is None:
        raise IpcError("the daemon closed the connection without answering")
    if reply["type"] == "error":
        _raise_error(reply, paths)
    return reply


def _raise_error(frame: ipc.Message, paths: ProjectPaths) -> None:
    message = str(frame.get("message", "unknown error"))
    if message == "permission denied":  # the daemon refused our uid
        raise permission_denied(paths.daemon_file, paths)
    raise IpcError(message)


async def converse(paths: ProjectPaths, message: ipc.Message) -> ipc.Channel:
    """Send one request and hand back the open connection: the caller reads the answer's
    frames and may write frames of its own (``send``: answers to approval requests)."""
    channel = await _connect(paths)
    try:
        await channel.send(message)
    except BaseException:
        await channel.close()
        raise
    return channel


async def stream(paths: ProjectPaths, message: ipc.Message) -> AsyncIterator[ipc.Message]:
    """Send one request and yield every frame of the answer until the connection ends."""
    channel = await _connect(paths)
    try:
        await channel.send(message)
        while True:
            frame = await channel.recv()
            if frame is None:
                return
            if frame["type"] == "error":
                _raise_error(frame, paths)
            yield frame
    finally:
        await channel.close()


async def daemon_running(paths: ProjectPaths) -> bool:
    """True if a daemon answers on this project's control socket."""
    try:
        await request(paths, {"type": "ping"}, reply_within=5)
    except (DaemonNotRunning, IpcError, OSError, TimeoutError):
        return False
    return True
