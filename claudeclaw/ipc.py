"""The wire format on claudeclaw's Unix sockets (supervisor ↔ workers, CLI ↔ daemon).

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON: one
object with ``"v"`` (the protocol version) and ``"type"``. Frames larger than
:data:`MAX_FRAME_BYTES`, non-JSON bodies, non-objects, a missing type and a foreign
version are protocol errors: the reader raises :class:`IpcError` and the caller closes that
one connection. Nothing a peer sends can take the process down.

Message types (see docs/MULTI_SESSION.md for fields):

* worker → supervisor: ``hello``, ``event``, ``acquire``, ``limited``, ``warm``,
  ``approval``, ``approval_cancel``, ``pong``, ``bye``
* supervisor → worker: ``configure``, ``run``, ``grant``, ``cancel``, ``close_warm``,
  ``approval_answer``, ``reset``, ``ping``, ``reload``, ``shutdown``
* CLI → daemon: ``status``, ``send`` (then ``approval.answer`` on the same connection),
  ``cancel``, ``sessions.list``, ``sessions.show``, ``sessions.rm``, ``reload``,
  ``jobs.list``, ``jobs.run``, ``heartbeat.run``, ``debug.hang`` (tests only); daemon →
  CLI: ``result``, ``error``, ``event``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from claudeclaw.errors import IpcError

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 4 * 1024 * 1024
# Sent by the supervisor to a worker that stopped answering, just before it is killed: the
# worker's faulthandler writes every thread's stack to its log (stderr).
DUMP_STACKS_SIGNAL = signal.SIGUSR1

_HEADER = struct.Struct(">I")

Message = dict[str, Any]


MAX_PROMPT_BYTES = MAX_FRAME_BYTES - 64 * 1024  # a prompt's share of a `run` frame


def json_size(text: str) -> int:
    """Bytes ``text`` takes in a frame (JSON escapes non-ASCII: an emoji is 12 bytes)."""
    return len(json.dumps(text))


def encode_frame(message: Message) -> bytes:
    """Serialise ``message`` (adding the version) into one frame."""
    body = json.dumps({"v": PROTOCOL_VERSION, **message}, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise IpcError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> Message:
    """Parse and check one frame body."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IpcError(f"frame is not UTF-8 JSON: {exc}") from None
    if not isinstance(message, dict):
        raise IpcError("frame is not a JSON object")
    if message.get("v") != PROTOCOL_VERSION:
        raise IpcError(f"unsupported protocol version {message.get('v')!r}")
    if not isinstance(message.get("type"), str):
        raise IpcError("frame has no string 'type'")
    return message


async def read_frame(reader: asyncio.StreamReader) -> Message | None:
    """The next message, or None at a clean end of stream (between frames)."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise IpcError("connection closed inside a frame header") from None
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise IpcError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise IpcError("connection closed inside a frame") from None
    return decode_body(body)


class Channel:
    """One framed connection: ``send`` never interleaves frames, ``recv`` yields messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._corked: list[bytes] | None = None  # frames of send_nowait, not written yet

    @classmethod
    async def connect(cls, path: str) -> Channel:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_FRAME_BYTES + 64)
        return cls(reader, writer)

    async def send(self, message: Message) -> None:
        """Queue one frame (after those of :meth:`send_nowait`) and wait for the transport
        buffer to drain."""
        self.flush()
        self.writer.write(encode_frame(message))
        await self.writer.drain()

    def send_nowait(self, message: Message) -> None:
        """Queue one frame without waiting (for callbacks that cannot await). The frames
        queued in one pass of the event loop leave in one write: one system call and one
        wake-up of the other side, not one per frame (a run's end sends several)."""
        if self.writer.is_closing():
            return
        frame = encode_frame(message)
        if self._corked is None:
            self._corked = [frame]
            asyncio.get_running_loop().call_soon(self.flush)
        else:
            self._corked.append(frame)

    def flush(self) -> None:
        """Write the frames :meth:`send_nowait` queued, now."""
        frames, self._corked = self._corked, None
        if frames and not self.writer.is_closing():
            self.writer.write(b"".join(frames))

    async def recv(self) -> Message | None:
        return await read_frame(self.reader)

    def peer_credentials(self) -> tuple[int, int, int]:
        """(pid, uid, gid) of the process at the other end (SO_PEERCRED)."""
        sock: socket.socket | None = self.writer.get_extra_info("socket")
        if sock is None:
            raise IpcError("no socket behind this channel")
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return pid, uid, gid

    async def close(self) -> None:
        self.flush()
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def listen(
    path: Path,
    on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> asyncio.AbstractServer:
    """A Unix stream server at ``path`` (a stale socket file is replaced), mode 0600."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = await asyncio.start_unix_server(on_connect, path=str(path), limit=MAX_FRAME_BYTES + 64)
    os.chmod(path, 0o600)
    return server
