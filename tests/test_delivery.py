"""delivery.py: retries only what can succeed, one nonce per chunk, UTF-16 lengths.

A scripted channel stands in for discord.py's (the end-to-end path is in test_bot.py and
test_faults.py); it records every ``send`` and raises the errors a test queues.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import discord
from structlog.testing import capture_logs

from claudeclaw.config import Settings
from claudeclaw.frontend.delivery import ReplyDelivery, chunk_nonce, final_refusal
from claudeclaw.frontend.render import utf16_len
from claudeclaw.model import GLOBAL_KEY
from claudeclaw.paths import ProjectPaths


def http_error(status: int) -> discord.HTTPException:
    response = SimpleNamespace(status=status, reason="x")
    if status == 403:
        return discord.Forbidden(response, {"message": "Missing Permissions", "code": 50013})  # type: ignore[arg-type]
    if status >= 500:
        return discord.DiscordServerError(response, "down")  # type: ignore[arg-type]
    return discord.HTTPException(response, {"message": "Invalid Form Body", "code": 50035})  # type: ignore[arg-type]


class ScriptedChannel:
    def __init__(self, *errors: Exception, channel_id: int = 42) -> None:
        self.id = channel_id
        self.errors = list(errors)
        self.sends: list[dict[str, Any]] = []

    async def send(self, **kwargs: Any) -> None:
        self.sends.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)


class FakeMessage:
    def __init__(self, channel: ScriptedChannel, message_id: int = 7) -> None:
        self.id = message_id
        self.channel = channel

    def to_reference(self, **_: Any) -> str:
        return "ref"


def delivery(tmp_path: Any) -> ReplyDelivery:
    out = ReplyDelivery(Settings(), ProjectPaths(tmp_path))
    out.retry_delays = (0.0, 0.0, 0.0)
    return out


async def test_a_chunk_keeps_its_nonce_across_retries(tmp_path: Any) -> None:
    """Discord 5xx after discord.py's own retries: we retry with the same nonce (Discord
    then returns the message it may already have created); chunks differ in nonce."""
    channel = ScriptedChannel(http_error(503), http_error(500))
    ok = await delivery(tmp_path).deliver(FakeMessage(channel), GLOBAL_KEY, ["one", "two"])  # type: ignore[arg-type]
    assert ok
    nonces = [send["nonce"] for send in channel.sends]
    assert [send["content"] for send in channel.sends] == ["one", "one", "one", "two"]
    assert nonces[0] == nonces[1] == nonces[2] == chunk_nonce(7, 0, "one")
    assert nonces[3] != nonces[0] and len(nonces[0]) <= 25


async def test_a_403_is_not_retried_and_names_the_permission_once(tmp_path: Any) -> None:
    channel = ScriptedChannel(http_error(403), http_error(403))
    out = delivery(tmp_path)
    with capture_logs() as logs:
        assert not await out.deliver(FakeMessage(channel), GLOBAL_KEY, ["a"])  # type: ignore[arg-type]
        assert not await out.deliver(FakeMessage(channel, 8), GLOBAL_KEY, ["b"])  # type: ignore[arg-type]
    assert len(channel.sends) == 2  # one attempt each, no retries
    forbidden = [e for e in logs if e["event"] == "discord.reply_forbidden"]
    assert len(forbidden) == 1 and "Send Messages" in forbidden[0]["fix"]
    assert not [e for e in logs if e["event"] == "discord.reply_retry"]
    assert len(list(out.paths.undelivered_dir.glob("*.md"))) == 2  # nothing lost


async def test_a_400_is_not_retried(tmp_path: Any) -> None:
    channel = ScriptedChannel(http_error(400))
    assert not await delivery(tmp_path).deliver(FakeMessage(channel), GLOBAL_KEY, ["a"])  # type: ignore[arg-type]
    assert len(channel.sends) == 1


async def test_network_errors_are_retried(tmp_path: Any) -> None:
    channel = ScriptedChannel(ConnectionResetError(), TimeoutError())
    assert await delivery(tmp_path).deliver(FakeMessage(channel), GLOBAL_KEY, ["a"])  # type: ignore[arg-type]
    assert len(channel.sends) == 3


async def test_the_start_of_a_file_reply_fits_in_utf16_units(tmp_path: Any) -> None:
    """Discord counts UTF-16 units: 995 emoji are 1990 of them, so the head is cut."""
    channel = ScriptedChannel()
    first = "😀" * 995
    chunks = [first] + ["x"] * 9
    reply = "\n".join(chunks)
    ok = await delivery(tmp_path).deliver_as_file(FakeMessage(channel), GLOBAL_KEY, reply, chunks)  # type: ignore[arg-type]
    assert ok and len(channel.sends) == 1
    content = channel.sends[0]["content"]
    assert utf16_len(content) <= 2000 and content.startswith("😀" * 900)
    assert "reply.md" in content and channel.sends[0]["file"].filename == "reply.md"


async def test_a_refused_file_falls_back_to_messages(tmp_path: Any) -> None:
    channel = ScriptedChannel(http_error(403))
    chunks = ["a", "b"]
    ok = await delivery(tmp_path).deliver_as_file(FakeMessage(channel), GLOBAL_KEY, "a b", chunks)  # type: ignore[arg-type]
    assert ok and [s["content"] for s in channel.sends[1:]] == ["a", "b"]


def refused(status: int, code: int) -> discord.HTTPException:
    response = SimpleNamespace(status=status, reason="x")
    kind = {403: discord.Forbidden, 404: discord.NotFound}.get(status, discord.HTTPException)
    return kind(response, {"message": "m", "code": code})  # type: ignore[arg-type]


def test_only_a_404_or_403_is_a_final_refusal() -> None:
    """Gone or barred: no later attempt can succeed. A 5xx, a 429, a 400 or the network:
    it may (they keep being retried)."""
    assert "channel is gone" in (final_refusal(refused(404, 10003)) or "")
    assert "message is gone" in (final_refusal(refused(404, 10008)) or "")
    assert "no access" in (final_refusal(refused(403, 50001)) or "")
    assert "lacks a permission" in (final_refusal(refused(403, 50013)) or "")
    assert "403 (code 160005" in (final_refusal(refused(403, 160005)) or "")
    for transient in (http_error(503), refused(429, 0), http_error(400), ConnectionResetError()):
        assert final_refusal(transient) is None


async def test_a_final_refusal_is_told_once_with_the_saved_file(tmp_path: Any) -> None:
    out = delivery(tmp_path)
    down: Any = FakeMessage(ScriptedChannel(*[http_error(503)] * 4))
    assert not await out.deliver(down, GLOBAL_KEY, ["a"])
    assert out.take_refusal(7) is None  # a 5xx: Discord may take it later
    gone: Any = FakeMessage(ScriptedChannel(refused(404, 10003)))
    assert not await out.deliver(gone, GLOBAL_KEY, ["a"])
    refusal = out.take_refusal(7)
    assert refusal is not None and (refusal.status, refusal.code) == (404, 10003)
    assert refusal.path is not None and "never: the channel is gone" in refusal.path.read_text()
    assert out.take_refusal(7) is None
    assert len(list(out.paths.undelivered_dir.glob("*.md"))) == 1  # one file, rewritten
