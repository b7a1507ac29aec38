"""A loopback fake of the Anthropic Messages API, enough for the real ``claude`` CLI.

Answers ``POST /v1/messages`` (the CLI adds ``?beta=true``) with the SSE sequence
``message_start, ping, content_block_start, content_block_delta..., content_block_stop,
message_delta, message_stop``. A ``{"role": "system"}`` entry in ``messages`` (2.1.330 sends
one) is tolerated and not counted.

Default reply: ``FAKE-REPLY user_msgs=<U> assistant_msgs=<A> last=<last user text>``, so a
test sees how much history the CLI re-sent. After a tool call the reply is
``TOOL-RESULT is_error=<bool>: <tool output>``. Directives in the last user text:

``ERROR:<status>``     HTTP <status> with an Anthropic error body (``fake error <status>``)
``TOOL:<Name>:<json>`` "Calling <Name>." plus a ``tool_use`` block with that input
``SLOW:<s>``           wait s seconds before answering

Every request is recorded (``FakeAnthropic.requests``). Use it in-process
(``with FakeAnthropic() as api: api.url``), or standalone:
``python tests/fake_anthropic.py --port 8765`` (prints ``listening on <url>``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]


def _tool_results(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def user_text(message: dict[str, Any]) -> str:
    """The user's own text in a message (the CLI's ``<system-reminder>`` blocks skipped)."""
    texts = [
        t for t in _texts(message.get("content")) if not t.lstrip().startswith("<system-reminder>")
    ]
    return texts[-1] if texts else ""


def count_turns(messages: list[dict[str, Any]]) -> tuple[int, int]:
    """(user messages with text, assistant messages); system and tool results not counted."""
    users = sum(
        1
        for m in messages
        if isinstance(m, dict) and m.get("role") == "user" and not _tool_results(m.get("content"))
    )
    assistants = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
    return users, assistants


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def build_reply(body: dict[str, Any]) -> tuple[int, dict[str, Any] | list[dict[str, Any]], float]:
    """(status, error body or content blocks, delay seconds) for one request body."""
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    results = _tool_results(last.get("content"))
    if results:
        result = results[-1]
        content = result.get("content")
        output = content if isinstance(content, str) else " ".join(_texts(content))
        text = f"TOOL-RESULT is_error={bool(result.get('is_error'))}: {output}"
        return 200, [{"type": "text", "text": text}], 0.0
    prompt = user_text(last)
    delay = 0.0
    slow = re.search(r"\bSLOW:([0-9.]+)", prompt)
    if slow:
        delay = float(slow.group(1))
    error = re.search(r"\bERROR:(\d{3})\b", prompt)
    if error:
        status = int(error.group(1))
        kind = _ERROR_TYPES.get(status, "api_error")
        return (
            status,
            {"type": "error", "error": {"type": kind, "message": f"fake error {status}"}},
            delay,
        )
    tool = re.search(r"\bTOOL:(\w+):", prompt)
    if tool:
        try:
            tool_input, _ = json.JSONDecoder().raw_decode(prompt, tool.end())
        except ValueError:
            tool_input = {}
        name = tool.group(1)
        return (
            200,
            [
                {"type": "text", "text": f"Calling {name}."},
                {
                    "type": "tool_use",
                    "id": "toolu_" + uuid.uuid4().hex[:24],
                    "name": name,
                    "input": tool_input,
                },
            ],
            delay,
        )
    users, assistants = count_turns(messages)
    text = f"FAKE-REPLY user_msgs={users} assistant_msgs={assistants} last={prompt}"
    return 200, [{"type": "text", "text": text}], delay


def sse_body(model: str, blocks: list[dict[str, Any]]) -> bytes:
    """The SSE stream of one assistant message made of ``blocks``."""
    msg_id = "msg_fake_" + uuid.uuid4().hex[:20]
    parts = [
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 12,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 1,
                    },
                },
            },
        ),
        _sse("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(blocks):
        if block["type"] == "tool_use":
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        parts.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        parts.append(
            _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        )
        parts.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    parts.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        )
    )
    parts.append(_sse("message_stop", {"type": "message_stop"}))
    return b"".join(parts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", "req_fake_" + uuid.uuid4().hex[:12])
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def do_HEAD(self) -> None:
        self._send(200, "text/plain", b"")

    def do_GET(self) -> None:
        self.server.owner.record(self, {})
        self._send(
            404,
            "application/json",
            json.dumps(
                {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": "fake: not found"},
                }
            ).encode(),
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        self.server.owner.record(self, body)
        if not self.path.split("?", 1)[0].endswith("/v1/messages"):
            self._send(
                404,
                "application/json",
                json.dumps(
                    {
                        "type": "error",
                        "error": {"type": "not_found_error", "message": "fake: not found"},
                    }
                ).encode(),
            )
            return
        status, reply, delay = build_reply(body)
        if delay:
            time.sleep(delay)
        if status != 200:
            self._send(status, "application/json", json.dumps(reply).encode())
            return
        assert isinstance(reply, list)
        model = str(body.get("model") or "claude-fake")
        if body.get("stream"):
            self._send(200, "text/event-stream", sse_body(model, reply))
        else:
            message = {
                "id": "msg_fake_" + uuid.uuid4().hex[:20],
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": reply,
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 12, "output_tokens": 7},
            }
            self._send(200, "application/json", json.dumps(message).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeAnthropic


class FakeAnthropic:
    """The fake API on ``127.0.0.1:<port>`` (0: a free port), served from a thread."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(
                RecordedRequest(handler.command, handler.path, dict(handler.headers.items()), body)
            )

    def message_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and "/v1/messages" in r.path]

    def start(self) -> FakeAnthropic:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            daemon=True,
            name="fake-anthropic",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Loopback fake Anthropic Messages API")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    api = FakeAnthropic(args.port)
    print(f"listening on {api.url}", flush=True)
    try:
        api._server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        api._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
