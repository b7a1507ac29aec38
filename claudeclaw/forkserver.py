"""A clean, single-threaded process that forks worker processes on request.

Why: a worker started by exec pays for a fresh interpreter each time (~120 ms on 2 cores,
~17 MB of private memory, and CPU contention when many threads wake at once). The
supervisor cannot fork itself: it runs an asyncio loop and threads (discord.py, the
default executor), and forking a threaded process can deadlock the child. So at start the
supervisor execs this small server once; it imports the worker code, freezes the garbage
collector's view of those objects (fewer copy-on-write pages), and then forks a worker per
request. Children share the imported code pages with the server: a new worker is ready in
a few milliseconds and costs a few MB of its own.

Protocol (ipc frames over a socketpair given as ``--fd``): the supervisor sends
``spawn {req, key, args, env}``; the server answers ``spawned {req, pid}`` (or
``spawn_failed {req, error}``) and later ``exited {pid, rc}`` when it reaps the child.
When the supervisor's end closes, the server exits; its workers notice the supervisor is
gone on their own sockets and end themselves.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import selectors
import signal
import socket
import struct
import sys
from typing import Any

from claudeclaw import ipc, settings_wire
from claudeclaw.errors import IpcError

_HEADER = struct.Struct(">I")


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(ipc.encode_frame(message))


def _child(sock: socket.socket, args: list[str], env: dict[str, str], close: list[int]) -> None:
    """In the forked child: become a worker and never return."""
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        sock.close()
        for fd in close:
            os.close(fd)
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        # the server's objects stay frozen: a full collection here would otherwise write
        # to every one of them (~10 ms of CPU, ~6.5 MB copied from the server per worker)
        from claudeclaw import worker

        code = worker.main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        rc = os.waitstatus_to_exitcode(status)
        try:
            _send(sock, {"type": "exited", "pid": pid, "rc": rc})
        except OSError:
            pass


def serve(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    # preload everything a worker needs, then keep those objects out of the collector's
    # reach so children do not dirty (copy) the pages they live on
    import claudeclaw.worker

    # the worker's parser, built once for every child, and used once: argparse's lazy
    # imports and regexes load now, not in each forked worker
    claudeclaw.worker.build_parser().parse_args(
        ["--project", "/", "--key", "global", "--socket", "/"]
    )
    settings_wire.prepare()  # (each worker decodes the settings it is sent once)
    gc.collect()
    gc.freeze()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    buffer = b""
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                os.read(wake_r, 4096)
                _reap(sock)
                continue
            chunk = sock.recv(65536)
            if not chunk:
                return 0
            buffer += chunk
            while len(buffer) >= _HEADER.size:
                (length,) = _HEADER.unpack_from(buffer)
                if length > ipc.MAX_FRAME_BYTES:
                    return 2
                if len(buffer) < _HEADER.size + length:
                    break
                body = buffer[_HEADER.size : _HEADER.size + length]
                buffer = buffer[_HEADER.size + length :]
                try:
                    request = ipc.decode_body(body)
                except IpcError:
                    return 2
                if request["type"] != "spawn":
                    continue
                try:
                    pid = os.fork()
                except OSError as exc:
                    _send(sock, {"type": "spawn_failed", "req": request["req"], "error": str(exc)})
                    continue
                if pid == 0:
                    selector.close()
                    _child(sock, list(request["args"]), dict(request["env"]), [wake_r, wake_w])
                _send(sock, {"type": "spawned", "req": request["req"], "pid": pid})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="claudeclaw-forkserver")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--nice", type=int, default=0)
    args = parser.parse_args(argv)
    if args.nice > 0:
        # its forks must not preempt the supervisor either; workers inherit the value
        os.nice(args.nice)
    try:
        return serve(args.fd)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        print(json.dumps({"event": "forkserver.failed", "error": repr(exc)}), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
