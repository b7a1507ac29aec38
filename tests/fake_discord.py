"""A loopback fake of Discord (gateway websocket + REST) for driving the real discord.py.

Point discord.py at it with ``discord.http.Route.BASE = fake.api_base`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)`` (the
``fake_discord`` fixture does both). It models what the frontend uses:

* gateway: HELLO -> IDENTIFY (token checked; close 4004 if wrong) -> READY -> GUILD_CREATE
  (one guild: text channels ``general`` and ``listen``, one active thread under each);
  heartbeats (op 1 -> 11); RESUME (op 6 -> replay of missed events + RESUMED);
  :meth:`drop_connection` closes the socket server-side (4000) so the client resumes;
  the MESSAGE_CONTENT intent is emulated (without it guild messages arrive empty unless
  they mention the bot);
* REST: users/@me, oauth2 application, command sync, channels, messages (JSON or
  multipart; content over 2000 UTF-16 units -> 400 code 50035), edits, deletes, reactions,
  typing, thread members, interaction callbacks, webhook follow-ups and @original edits,
  attachment downloads. ``fail_posts[channel_id] = status`` makes message POSTs fail;
  ``refuse_posts[channel_id] = code`` answers them with that JSON error code and its real
  status (:data:`DISCORD_ERRORS`: 10003 Unknown Channel, 50013 Missing Permissions…). A
  reply to a message that is gone is refused (400 50035) unless ``fail_if_not_exists`` is
  false, then posted as a plain message.
* faults: ``fail_after_create[channel_id] = n``: the next n message POSTs to it are
  processed (a message is created, or found by its nonce), then answered 500 anyway;
  ``reaction_gate`` (an Event) holds every reaction call until it is set (slow
  reactions); ``typing_gate`` holds every typing call the same way; ``reaction_status``
  makes reaction calls fail; ``created_gate`` (an Event) holds the
  answer to every message POST, the message already created and dispatched, until it is
  set (people see it before the bot knows it posted it). Message nonces with
  ``enforce_nonce`` are honoured as Discord does: a repeat returns the message already
  created.
* message components: a message keeps the ``components`` (buttons) it was posted or edited
  with; :meth:`press_button` sends a MESSAGE_COMPONENT ``INTERACTION_CREATE``; its
  callback may be a message (4, ephemeral with flag 64), a deferred update (6) or an
  update of the pressed message (7);
* helpers: :meth:`user_says`, :meth:`user_deletes`, :meth:`create_thread`,
  :meth:`archive_thread`, :meth:`delete_thread`, :meth:`delete_channel`,
  :meth:`slash_command`, :meth:`press_button`, and awaitables such as
  :meth:`wait_for_message` (no sleeping and hoping).

Everything is recorded: ``requests``, ``messages`` (per channel), ``sent_payloads`` (the
JSON the bot sent for each message id), ``reactions``, ``reaction_log``, ``edits``,
``deleted``, ``typing``, ``thread_members``, ``interaction_callbacks``, ``gateway_log``,
``unhandled``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import BodyPartReader, WSMsgType, web

T = TypeVar("T")

MESSAGE_CONTENT_INTENT = 1 << 15
ALL_PERMISSIONS = str((1 << 50) - 1)
DISCORD_EPOCH_MS = 1_420_070_400_000
_last_id = 0


def snowflake(at: float | None = None) -> str:
    """A fresh id made as Discord makes them: milliseconds since 2015 in the high bits
    (history ``after``/``before`` by time works), always increasing. ``at``: an id of that
    earlier time (a message sent then)."""
    global _last_id
    ms = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
    if at is not None:
        return str((ms << 22) + next(_low))
    _last_id = max(_last_id + 1, ms << 22)
    return str(_last_id)


_low = itertools.count(1)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def make_user(name: str, *, bot: bool = False, user_id: str | None = None) -> dict[str, Any]:
    return {
        "id": user_id or snowflake(),
        "username": name,
        "discriminator": "0",
        "global_name": name.title(),
        "avatar": None,
        "bot": bot,
        "system": False,
        "public_flags": 0,
        "flags": 0,
    }


def _json(obj: Any, status: int = 200) -> web.Response:
    # content-type must be exactly application/json for discord.http.json_or_text
    return web.Response(
        body=json.dumps(obj).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _error(status: int, message: str, code: int, **extra: Any) -> web.Response:
    return _json({"message": message, "code": code, **extra}, status)


# Discord's JSON error codes (as it sends them) that the fake can answer with
DISCORD_ERRORS: dict[int, tuple[int, str]] = {
    10003: (404, "Unknown Channel"),
    10008: (404, "Unknown Message"),
    50001: (403, "Missing Access"),
    50013: (403, "Missing Permissions"),
    160005: (403, "Thread is locked"),
}


def discord_error(code: int) -> web.Response:
    status, message = DISCORD_ERRORS[code]
    return _error(status, message, code)


@dataclass
class Recorded:
    method: str
    path: str
    json: Any = None
    query: dict[str, str] = field(default_factory=dict)
    transport: Any = field(default=None, compare=False, repr=False)  # the client's connection


class FakeDiscord:
    """See the module docstring."""

    def __init__(self, *, token: str = "fake-bot-token-0123456789") -> None:
        self.token = token
        self.bot = make_user("claudeclaw", bot=True)
        self.application_id = snowflake()
        self.owner = make_user("owner")
        self.alice = make_user("alice")
        self.bob = make_user("bob")
        self.guild_id = snowflake()
        self.general_id = snowflake()
        self.listen_id = snowflake()
        self.thread_id = snowflake()  # active thread under general
        self.listen_thread_id = snowflake()  # active thread under listen
        self.channels: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.sent_payloads: dict[str, dict[str, Any]] = {}
        self.reactions: dict[str, list[str]] = defaultdict(list)
        self.reaction_log: list[tuple[str, str, str]] = []
        self.edits: dict[str, list[str]] = defaultdict(list)
        self.deleted: dict[str, dict[str, Any]] = {}
        self.typing: dict[str, int] = defaultdict(int)
        self.thread_members: dict[str, set[str]] = defaultdict(set)
        self.commands: list[dict[str, Any]] = []
        self.interaction_callbacks: dict[str, dict[str, Any]] = {}
        self.interaction_messages: dict[str, dict[str, Any]] = {}  # token -> original
        self.followups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.requests: list[Recorded] = []
        self.unhandled: list[Recorded] = []
        self.gateway_log: list[dict[str, Any]] = []
        self.fail_posts: dict[str, int] = {}
        self.refuse_posts: dict[str, int] = {}  # channel -> a DISCORD_ERRORS code
        self.fail_after_create: dict[str, int] = {}
        self.reaction_gate: asyncio.Event | None = None
        self.typing_gate: asyncio.Event | None = None
        self.created_gate: asyncio.Event | None = None
        self.reaction_status: int | None = None
        self.nonces: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, nonce) -> message
        self.file_texts: list[str] = []  # the text of every uploaded file (utf-8, replace)
        self.blobs: dict[str, tuple[bytes, str]] = {}
        self.download_gate: asyncio.Event | None = None  # set: attachment downloads wait
        self.gateway_close_code: int | None = None  # e.g. 4004 or 4014 at IDENTIFY
        self.identify_count = 0
        self.resume_count = 0
        self.identified_intents = 0
        self._ws: web.WebSocketResponse | None = None
        self._session_id = ""
        self._seq = 0
        self._sent: list[dict[str, Any]] = []  # dispatches of this gateway session
        self._pressed: dict[str, tuple[str, str]] = {}  # component interaction -> message
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._build_guild()

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        """Serve on ``port`` (0: any free one). Start again on the old port after
        :meth:`stop` to model Discord coming back after an outage."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ---- waiting -----------------------------------------------------------------------

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self, predicate: Callable[[], T | None], *, timeout: float = 5.0, what: str = "condition"
    ) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every change); return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            event = self._changed
            try:
                # woken by any change of the fake; re-checked at least every 50 ms for
                # conditions outside it (files, the frontend's own state)
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))
            except TimeoutError:
                pass

    def bot_messages(self, channel_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages[channel_id] if m["author"]["id"] == self.bot["id"]]

    async def wait_for_message(
        self,
        channel_id: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """The first message the bot posted in ``channel_id`` matching ``predicate``."""

        def find() -> dict[str, Any] | None:
            for message in self.bot_messages(channel_id):
                if predicate is None or predicate(message):
                    return message
            return None

        found = await self.wait_until(find, timeout=timeout, what=f"bot message in {channel_id}")
        assert found is not None
        return found

    async def wait_for_reaction(
        self, message_id: str, emoji: str, *, timeout: float = 5.0
    ) -> list[str]:
        return await self.wait_until(
            lambda: self.reactions[message_id] if emoji in self.reactions[message_id] else None,
            timeout=timeout,
            what=f"reaction {emoji} on {message_id}",
        )

    async def wait_for_callback(
        self, interaction_id: str, *, timeout: float = 5.0
    ) -> dict[str, Any]:
        return await self.wait_until(
            lambda: self.interaction_callbacks.get(interaction_id),
            timeout=timeout,
            what=f"interaction callback {interaction_id}",
        )

    async def wait_for_original(
        self,
        token: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            original = self.interaction_messages.get(token)
            return original if original is not None and predicate(original) else None

        return await self.wait_until(find, timeout=timeout, what="interaction @original")

    # ---- world -------------------------------------------------------------------------

    def _text_channel(self, channel_id: str, name: str, position: int) -> dict[str, Any]:
        return {
            "id": channel_id,
            "type": 0,
            "guild_id": self.guild_id,
            "name": name,
            "position": position,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "default_auto_archive_duration": 1440,
            "flags": 0,
        }

    def _thread(self, thread_id: str, parent_id: str, name: str, owner_id: str) -> dict[str, Any]:
        return {
            "id": thread_id,
            "type": 11,
            "guild_id": self.guild_id,
            "parent_id": parent_id,
            "owner_id": owner_id,
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "rate_limit_per_user": 0,
            "flags": 0,
            "applied_tags": [],
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": now_iso(),
                "locked": False,
                "invitable": True,
                "create_timestamp": now_iso(),
            },
        }

    def _build_guild(self) -> None:
        self.channels[self.general_id] = self._text_channel(self.general_id, "general", 0)
        self.channels[self.listen_id] = self._text_channel(self.listen_id, "listen", 1)
        self.channels[self.thread_id] = self._thread(
            self.thread_id, self.general_id, "a thread", self.alice["id"]
        )
        self.channels[self.listen_thread_id] = self._thread(
            self.listen_thread_id, self.listen_id, "listen thread", self.alice["id"]
        )

    def _member(self, user: dict[str, Any]) -> dict[str, Any]:
        return {
            "user": user,
            "roles": [],
            "joined_at": now_iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "pending": False,
            "premium_since": None,
            "communication_disabled_until": None,
            "permissions": ALL_PERMISSIONS,
        }

    def _guild_payload(self) -> dict[str, Any]:
        guild_channels = [c for c in self.channels.values() if c["type"] == 0]
        threads = [
            c
            for c in self.channels.values()
            if c["type"] in (10, 11, 12) and not c["thread_metadata"]["archived"]
        ]
        return {
            "id": self.guild_id,
            "name": "fake guild",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": self.owner["id"],
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [
                {
                    "id": self.guild_id,
                    "name": "@everyone",
                    "permissions": ALL_PERMISSIONS,
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": now_iso(),
            "large": False,
            "unavailable": False,
            "member_count": 3,
            "members": [self._member(self.bot)],
            "channels": guild_channels,
            "threads": threads,
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def dm_channel(self, user: dict[str, Any]) -> str:
        """The DM channel between ``user`` and the bot (created on first use)."""
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == user["id"]:
                return str(channel["id"])
        channel_id = snowflake()
        self.channels[channel_id] = {
            "id": channel_id,
            "type": 1,
            "recipients": [user],
            "last_message_id": None,
            "flags": 0,
        }
        return channel_id

    def _guild_of(self, channel_id: str) -> str | None:
        channel = self.channels.get(channel_id)
        return None if channel is None else channel.get("guild_id")

    # ---- gateway -----------------------------------------------------------------------

    async def _send(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        await ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH now, or keep it for the RESUME replay if nobody is connected."""
        self._seq += 1
        payload = {"op": 0, "t": event, "s": self._seq, "d": data}
        self._sent.append(payload)
        ws = self._ws
        if ws is not None and not ws.closed:
            try:
                await self._send(ws, payload)
            except ConnectionError:
                pass

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await self._send(ws, {"op": 10, "s": None, "t": None, "d": {"heartbeat_interval": 45000}})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            op = data.get("op")
            logged = dict(data)
            if isinstance(logged.get("d"), dict) and "token" in logged["d"]:
                logged["d"] = {**logged["d"], "token": "[redacted]"}
            self.gateway_log.append(logged)
            if op == 1:
                await self._send(ws, {"op": 11, "s": None, "t": None, "d": None})
            elif op == 2:
                if data["d"].get("token") != self.token or self.gateway_close_code == 4004:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                if self.gateway_close_code is not None:
                    await ws.close(code=self.gateway_close_code, message=b"Refused by test.")
                    break
                await self._identify(ws, data["d"])
            elif op == 6:
                await self._resume(ws, data["d"])
            self._touch()
        if self._ws is ws:
            self._ws = None
        self._touch()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.identified_intents = int(data.get("intents", 0))
        self._session_id = secrets.token_hex(8)
        self._seq = 0
        self._sent = []
        self._ws = ws
        self.identify_count += 1
        await self.dispatch(
            "READY",
            {
                "v": 10,
                "user": {**self.bot, "verified": True, "mfa_enabled": False},
                "session_id": self._session_id,
                "resume_gateway_url": self.gateway_url,
                "shard": [0, 1],
                "guilds": [{"id": self.guild_id, "unavailable": True}],
                "application": {"id": self.application_id, "flags": 0},
                "private_channels": [],
                "relationships": [],
            },
        )
        await self.dispatch("GUILD_CREATE", self._guild_payload())

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("token") != self.token or data.get("session_id") != self._session_id:
            await self._send(ws, {"op": 9, "s": None, "t": None, "d": False})
            return
        self._ws = ws
        seen = int(data.get("seq") or 0)
        for payload in self._sent:
            if payload["s"] > seen:
                await self._send(ws, payload)
        self.resume_count += 1
        await self.dispatch("RESUMED", {})

    async def drop_connection(self, code: int = 4000) -> None:
        """Close the gateway socket from the server side; discord.py should RESUME."""
        ws = self._ws
        self._ws = None
        if ws is not None:
            await ws.close(code=code, message=b"dropped by test")
        self._touch()

    # ---- things users do ---------------------------------------------------------------

    def _attachment(self, channel_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        attachment_id = snowflake()
        data: bytes = spec.get("data", b"")
        filename = spec.get("filename", "file.bin")
        ctype = spec.get("content_type", "application/octet-stream")
        path = f"/attachments/{channel_id}/{attachment_id}/{filename}"
        self.blobs[path] = (data, ctype)
        url = self.base_url + path
        return {
            "id": attachment_id,
            "filename": filename,
            "size": spec.get("size", len(data)),
            "url": url,
            "proxy_url": url,
            "content_type": ctype,
            "flags": 0,
        }

    def _message_payload(
        self,
        channel_id: str,
        author: dict[str, Any],
        content: str,
        *,
        message_type: int = 0,
        mentions: list[dict[str, Any]] | None = None,
        referenced: dict[str, Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        guild_id = self._guild_of(channel_id)
        message: dict[str, Any] = {
            "id": snowflake(),
            "channel_id": channel_id,
            "author": author,
            "content": content,
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions or [],
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": [],
            "pinned": False,
            "type": message_type,
            "flags": 0,
            "components": [],
        }
        if guild_id is not None:
            message["guild_id"] = guild_id
        if referenced is not None:
            message["message_reference"] = {
                "type": 0,
                "message_id": referenced["id"],
                "channel_id": referenced["channel_id"],
                **({"guild_id": guild_id} if guild_id else {}),
            }
            message["referenced_message"] = referenced
        return message

    async def user_says(
        self,
        channel_id: str,
        text: str,
        *,
        author: dict[str, Any] | None = None,
        mentions: list[dict[str, Any]] | None = None,
        message_type: int | None = None,
        referenced: dict[str, Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A user posts ``text``; dispatches MESSAGE_CREATE and returns the message."""
        author = author or self.alice
        channel = self.channels.get(channel_id, {})
        meta = channel.get("thread_metadata")
        if meta is not None and meta["archived"] and not meta["locked"]:
            await self.archive_thread(channel_id, archived=False)  # Discord unarchives it
        if message_type is None:
            message_type = 19 if referenced is not None else 0
        message = self._message_payload(
            channel_id,
            author,
            text,
            message_type=message_type,
            mentions=mentions,
            referenced=referenced,
            attachments=[self._attachment(channel_id, a) for a in attachments or []],
        )
        self.messages[channel_id].append(message)
        channel["last_message_id"] = message["id"]  # (as the gateway lists it at connect)
        event = dict(message)
        mentioned = any(u["id"] == self.bot["id"] for u in message["mentions"])
        if (
            "guild_id" in message
            and not self.identified_intents & MESSAGE_CONTENT_INTENT
            and not mentioned
        ):
            event.update(content="", attachments=[], embeds=[])
        await self.dispatch("MESSAGE_CREATE", event)
        self._touch()
        return message

    async def user_deletes(self, channel_id: str, message_id: str) -> None:
        """Its author deletes a message; dispatches MESSAGE_DELETE."""
        message = self._find_message(channel_id, message_id)
        assert message is not None, f"no message {message_id} in {channel_id}"
        self.messages[channel_id].remove(message)
        self.deleted[message_id] = message
        event = {"id": message_id, "channel_id": channel_id}
        guild_id = self._guild_of(channel_id)
        if guild_id is not None:
            event["guild_id"] = guild_id
        await self.dispatch("MESSAGE_DELETE", event)
        self._touch()

    async def delete_channel(self, channel_id: str) -> None:
        """An admin deletes a text channel (its threads go with it); CHANNEL_DELETE."""
        channel = self.channels.pop(channel_id)
        for thread_id in [k for k, c in self.channels.items() if c.get("parent_id") == channel_id]:
            del self.channels[thread_id]
        await self.dispatch("CHANNEL_DELETE", channel)
        self._touch()

    async def create_thread(
        self, parent_id: str, name: str = "new thread", *, owner: dict[str, Any] | None = None
    ) -> str:
        thread_id = snowflake()
        thread = self._thread(thread_id, parent_id, name, (owner or self.alice)["id"])
        self.channels[thread_id] = thread
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        self._touch()
        return thread_id

    async def archive_thread(self, thread_id: str, archived: bool = True) -> None:
        thread = self.channels[thread_id]
        thread["thread_metadata"]["archived"] = archived
        thread["thread_metadata"]["archive_timestamp"] = now_iso()
        await self.dispatch("THREAD_UPDATE", thread)
        self._touch()

    async def delete_thread(self, thread_id: str) -> None:
        thread = self.channels.pop(thread_id)
        await self.dispatch(
            "THREAD_DELETE",
            {
                "id": thread_id,
                "guild_id": thread["guild_id"],
                "parent_id": thread["parent_id"],
                "type": thread["type"],
            },
        )
        self._touch()

    async def slash_command(
        self,
        channel_id: str,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        user: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        """Invoke ``/name`` in ``channel_id``; returns ``(interaction_id, token)``."""
        command = next((c for c in self.commands if c["name"] == name), None)
        data = {
            "id": command["id"] if command else snowflake(),
            "name": name,
            "type": 1,
            "options": options or [],
        }
        return await self._interact(channel_id, user or self.alice, {"type": 2, "data": data})

    async def press_button(
        self,
        channel_id: str,
        message_id: str,
        custom_id: str,
        *,
        user: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        """Press the button ``custom_id`` of a bot message; returns ``(interaction_id, token)``."""
        message = self._find_message(channel_id, message_id)
        assert message is not None, f"no message {message_id} in {channel_id}"
        fields = {
            "type": 3,  # MESSAGE_COMPONENT
            "data": {"custom_id": custom_id, "component_type": 2},
            "message": message,
        }
        return await self._interact(
            channel_id, user or self.alice, fields, pressed=(channel_id, message_id)
        )

    async def _interact(
        self,
        channel_id: str,
        user: dict[str, Any],
        fields: dict[str, Any],
        *,
        pressed: tuple[str, str] | None = None,
    ) -> tuple[str, str]:
        """Dispatch an INTERACTION_CREATE of the kind ``fields`` says (type, data, ...) from
        ``user`` in ``channel_id``, guild or DM as the channel is."""
        interaction_id = snowflake()
        token = "itok-" + secrets.token_hex(12)
        channel = self.channels[channel_id]
        guild_id = channel.get("guild_id")
        payload: dict[str, Any] = {
            "id": interaction_id,
            "application_id": self.application_id,
            **fields,
            "channel_id": channel_id,
            "channel": channel,
            "token": token,
            "version": 1,
            "app_permissions": ALL_PERMISSIONS,
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild_id} if guild_id else {"1": user["id"]},
            "context": 0 if guild_id else 1,
            "attachment_size_limit": 26_214_400,
        }
        if guild_id:
            payload["guild_id"] = guild_id
            payload["guild_locale"] = "en-US"
            payload["member"] = self._member(user)
        else:
            payload["user"] = user
        if pressed is not None:
            self._pressed[interaction_id] = pressed
        await self.dispatch("INTERACTION_CREATE", payload)
        self._touch()
        return interaction_id, token

    @staticmethod
    def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
        """The buttons of a message (every action row's components)."""
        return [c for row in message.get("components") or [] for c in row.get("components", [])]

    # ---- REST --------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> Any:
        if not request.can_read_body:
            return None
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            body: dict[str, Any] = {"_files": []}
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                assert isinstance(part, BodyPartReader)
                if part.name == "payload_json":
                    body.update(json.loads(await part.text()))
                else:
                    data = await part.read()
                    body["_files"].append({"name": part.filename, "size": len(data)})
                    self.file_texts.append(bytes(data).decode("utf-8", errors="replace"))
            return body
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        body = await self._body(request)
        record = Recorded(request.method, path, body, dict(request.query), request.transport)
        self.requests.append(record)
        try:
            if path.startswith("/attachments/"):
                if self.download_gate is not None:
                    await self.download_gate.wait()  # tests: a slow attachment
                return self._download(path)
            if not path.startswith("/api/v10/"):
                return self._unhandled(record)
            route = path[len("/api/v10") :]
            if not route.startswith(("/interactions/", "/webhooks/")):
                if request.headers.get("Authorization") != f"Bot {self.token}":
                    return _error(401, "401: Unauthorized", 0)
            for method, pattern, handler in self._routes():
                if method != request.method:
                    continue
                match = re.fullmatch(pattern, route)
                if match is not None:
                    response: web.StreamResponse = await handler(
                        body, *[unquote(g) for g in match.groups()]
                    )
                    return response
            return self._unhandled(record)
        finally:
            self._touch()

    def _unhandled(self, record: Recorded) -> web.Response:
        self.unhandled.append(record)
        return _error(404, "404: Not Found", 0)

    def _routes(self) -> list[tuple[str, str, Callable[..., Any]]]:
        sf = r"(\d+)"
        return [
            ("GET", r"/users/@me", self._get_me),
            ("POST", r"/users/@me/channels", self._create_dm),
            ("GET", rf"/users/{sf}", self._get_user),
            ("GET", r"/gateway(?:/bot)?", self._get_gateway),
            ("GET", r"/oauth2/applications/@me", self._get_application),
            ("PUT", rf"/applications/{sf}/commands", self._put_commands),
            ("GET", rf"/applications/{sf}/commands", self._get_commands),
            ("GET", rf"/channels/{sf}", self._get_channel),
            ("POST", rf"/channels/{sf}/typing", self._post_typing),
            ("GET", rf"/channels/{sf}/messages", self._get_messages),
            ("POST", rf"/channels/{sf}/messages", self._post_message),
            ("GET", rf"/channels/{sf}/messages/{sf}", self._get_message),
            ("PATCH", rf"/channels/{sf}/messages/{sf}", self._patch_message),
            ("DELETE", rf"/channels/{sf}/messages/{sf}", self._delete_message),
            ("PUT", rf"/channels/{sf}/messages/{sf}/reactions/([^/]+)/@me", self._put_reaction),
            (
                "DELETE",
                rf"/channels/{sf}/messages/{sf}/reactions/([^/]+)/@me",
                self._delete_reaction,
            ),
            ("PUT", rf"/channels/{sf}/thread-members/@me", self._join_thread),
            ("DELETE", rf"/channels/{sf}/thread-members/@me", self._leave_thread),
            ("POST", rf"/interactions/{sf}/([^/]+)/callback", self._interaction_callback),
            ("GET", rf"/webhooks/{sf}/([^/]+)/messages/@original", self._get_original),
            ("PATCH", rf"/webhooks/{sf}/([^/]+)/messages/@original", self._patch_original),
            ("DELETE", rf"/webhooks/{sf}/([^/]+)/messages/@original", self._delete_original),
            ("POST", rf"/webhooks/{sf}/([^/]+)", self._post_followup),
        ]

    def _download(self, path: str) -> web.Response:
        blob = self.blobs.get(path)
        if blob is None:
            return web.Response(status=404, text="not found")
        data, ctype = blob
        return web.Response(body=data, headers={"Content-Type": ctype})

    async def _get_me(self, _body: Any) -> web.Response:
        return _json({**self.bot, "verified": True, "mfa_enabled": False})

    def _known_users(self) -> dict[str, dict[str, Any]]:
        return {u["id"]: u for u in (self.owner, self.alice, self.bob, self.bot)}

    async def _get_user(self, _body: Any, user_id: str) -> web.Response:
        user = self._known_users().get(user_id)
        return _json(user) if user is not None else _error(404, "Unknown User", 10013)

    async def _create_dm(self, body: Any) -> web.Response:
        user = self._known_users().get(str((body or {}).get("recipient_id")))
        if user is None:
            return _error(400, "Invalid Recipient", 50033)
        return _json(self.channels[self.dm_channel(user)])

    async def _get_gateway(self, _body: Any) -> web.Response:
        return _json(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    async def _get_application(self, _body: Any) -> web.Response:
        return _json(
            {
                "id": self.application_id,
                "name": "claudeclaw",
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": self.owner,
                "verify_key": "00" * 32,
                "flags": 1 << 19,  # GATEWAY_MESSAGE_CONTENT_LIMITED
                "summary": "",
                "rpc_origins": [],
                "interactions_endpoint_url": None,
            }
        )

    async def _put_commands(self, body: Any, app_id: str) -> web.Response:
        self.commands = [
            {
                **command,
                "id": snowflake(),
                "application_id": app_id,
                "version": snowflake(),
                "type": command.get("type", 1),
                "default_member_permissions": command.get("default_member_permissions"),
                "nsfw": command.get("nsfw", False),
            }
            for command in body or []
        ]
        return _json(self.commands)

    async def _get_commands(self, _body: Any, _app_id: str) -> web.Response:
        return _json(self.commands)

    async def _get_channel(self, _body: Any, channel_id: str) -> web.Response:
        channel = self.channels.get(channel_id)
        if channel is None:
            return _error(404, "Unknown Channel", 10003)
        return _json(channel)

    async def _post_typing(self, _body: Any, channel_id: str) -> web.Response:
        self.typing[channel_id] += 1
        if self.typing_gate is not None:
            await self.typing_gate.wait()
        return web.Response(status=204)

    async def _get_messages(self, _body: Any, channel_id: str) -> web.Response:
        """History as Discord serves it: newest first; ``after``: the oldest ones after it;
        ``before``: the newest ones before it; at most ``limit`` (default 50)."""
        query = self.requests[-1].query  # recorded just before this handler ran
        limit = min(int(query.get("limit", 50)), 100)
        found = sorted(self.messages[channel_id], key=lambda m: int(m["id"]))
        if "after" in query:
            found = [m for m in found if int(m["id"]) > int(query["after"])][:limit]
        else:
            if "before" in query:
                found = [m for m in found if int(m["id"]) < int(query["before"])]
            found = found[-limit:]
        return _json([self._with_reactions(m) for m in reversed(found)])

    def _with_reactions(self, message: dict[str, Any]) -> dict[str, Any]:
        emojis = self.reactions.get(message["id"], [])
        reactions = [{"emoji": {"id": None, "name": e}, "count": 1, "me": True} for e in emojis]
        return {**message, "reactions": reactions} if reactions else message

    def _find_message(self, channel_id: str, message_id: str) -> dict[str, Any] | None:
        for message in self.messages.get(channel_id, []):
            if message["id"] == message_id:
                return message
        return None

    async def _get_message(self, _body: Any, channel_id: str, message_id: str) -> web.Response:
        message = self._find_message(channel_id, message_id)
        if message is None:
            return _error(404, "Unknown Message", 10008)
        return _json(self._with_reactions(message))

    @staticmethod
    def _too_long(content: str) -> web.Response:
        return _error(
            400,
            "Invalid Form Body",
            50035,
            errors={
                "content": {
                    "_errors": [
                        {
                            "code": "BASE_TYPE_MAX_LENGTH",
                            "message": "Must be 2000 or fewer in length.",
                        }
                    ]
                }
            },
        )

    async def _post_message(self, body: Any, channel_id: str) -> web.Response:
        channel = self.channels.get(channel_id)
        if channel is None:
            return _error(404, "Unknown Channel", 10003)
        if channel_id in self.fail_posts:
            status = self.fail_posts[channel_id]
            return _error(status, "Missing Access" if status == 403 else "Failed", 50001)
        if channel_id in self.refuse_posts:
            return discord_error(self.refuse_posts[channel_id])
        body = body or {}
        content = body.get("content") or ""
        if utf16_len(content) > 2000:
            return self._too_long(content)
        if not content and not body.get("embeds") and not body.get("_files"):
            return _error(400, "Cannot send an empty message", 50006)
        meta = channel.get("thread_metadata")
        if meta is not None and meta["archived"]:
            if meta["locked"]:
                return _error(403, "Thread is locked", 160005)
            meta["archived"] = False
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            existing = self.nonces.get((channel_id, str(nonce)))
            if existing is not None:
                return self._after_create(channel_id, existing)
        referenced = None
        reference = body.get("message_reference")
        if reference:
            referenced = self._find_message(channel_id, str(reference.get("message_id")))
            if referenced is None and reference.get("fail_if_not_exists", True):
                unknown = {
                    "code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                    "message": "Unknown message",
                }
                return _error(
                    400,
                    "Invalid Form Body",
                    50035,
                    errors={"message_reference": {"_errors": [unknown]}},
                )
        message = self._message_payload(
            channel_id,
            self.bot,
            content,
            message_type=19 if referenced is not None else 0,
            referenced=referenced,
        )
        if nonce is not None:
            message["nonce"] = nonce
            if body.get("enforce_nonce"):
                self.nonces[(channel_id, str(nonce))] = message
        message["components"] = body.get("components") or []
        self.messages[channel_id].append(message)
        if channel_id in self.channels:
            self.channels[channel_id]["last_message_id"] = message["id"]
        self.sent_payloads[message["id"]] = body
        await self.dispatch("MESSAGE_CREATE", message)
        if self.created_gate is not None:
            await self.created_gate.wait()
        return self._after_create(channel_id, message)

    def _after_create(self, channel_id: str, message: dict[str, Any]) -> web.Response:
        left = self.fail_after_create.get(channel_id, 0)
        if left > 0:
            self.fail_after_create[channel_id] = left - 1
            return _error(500, "Internal Server Error", 0)
        return _json(message)

    async def redeliver(self, message: dict[str, Any]) -> None:
        """The gateway delivers a MESSAGE_CREATE once more (a replay)."""
        await self.dispatch("MESSAGE_CREATE", message)
        self._touch()

    async def _patch_message(self, body: Any, channel_id: str, message_id: str) -> web.Response:
        message = self._find_message(channel_id, message_id)
        if message is None:
            return _error(404, "Unknown Message", 10008)
        content = (body or {}).get("content")
        if content is not None:
            if utf16_len(content) > 2000:
                return self._too_long(content)
            message["content"] = content
            self.edits[message_id].append(content)
        if body is not None and "components" in body:
            message["components"] = body["components"] or []
        message["edited_timestamp"] = now_iso()
        self._touch()
        return _json(message)

    async def _delete_message(self, _body: Any, channel_id: str, message_id: str) -> web.Response:
        message = self._find_message(channel_id, message_id)
        if message is None:
            return _error(404, "Unknown Message", 10008)
        self.messages[channel_id].remove(message)
        self.deleted[message_id] = message
        return web.Response(status=204)

    async def _put_reaction(
        self, _body: Any, channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
        if self.reaction_gate is not None:
            await self.reaction_gate.wait()
        if self.reaction_status is not None:
            return _error(self.reaction_status, "Reaction failed", 0)
        if self._find_message(channel_id, message_id) is None:
            return _error(404, "Unknown Message", 10008)
        if emoji not in self.reactions[message_id]:
            self.reactions[message_id].append(emoji)
        self.reaction_log.append(("add", message_id, emoji))
        return web.Response(status=204)

    async def _delete_reaction(
        self, _body: Any, _channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
        if emoji in self.reactions[message_id]:
            self.reactions[message_id].remove(emoji)
        self.reaction_log.append(("remove", message_id, emoji))
        return web.Response(status=204)

    async def _join_thread(self, _body: Any, thread_id: str) -> web.Response:
        thread = self.channels.get(thread_id)
        if thread is None or thread["type"] not in (10, 11, 12):
            return _error(404, "Unknown Channel", 10003)
        if thread["thread_metadata"]["archived"]:
            return _error(400, "Thread is archived", 50083)
        self.thread_members[thread_id].add(self.bot["id"])
        await self.dispatch(
            "THREAD_MEMBER_UPDATE",
            {
                "id": thread_id,
                "user_id": self.bot["id"],
                "join_timestamp": now_iso(),
                "flags": 0,
                "guild_id": thread["guild_id"],
            },
        )
        return web.Response(status=204)

    async def _leave_thread(self, _body: Any, thread_id: str) -> web.Response:
        self.thread_members[thread_id].discard(self.bot["id"])
        return web.Response(status=204)

    # ---- interactions ------------------------------------------------------------------

    def _interaction_channel(self, interaction_id: str) -> str:
        for payload in self._sent:
            data = payload["d"]
            if payload["t"] == "INTERACTION_CREATE" and data["id"] == interaction_id:
                return str(data["channel_id"])
        return self.general_id

    async def _interaction_callback(
        self, body: Any, interaction_id: str, token: str
    ) -> web.Response:
        body = body or {}
        data = body.get("data") or {}
        content = data.get("content") or ""
        if utf16_len(content) > 2000:
            return self._too_long(content)
        pressed = self._pressed.get(interaction_id)
        if pressed is not None and body.get("type") in (6, 7):
            # a deferred update (6) changes nothing; an update (7) edits the pressed message
            target = self._find_message(*pressed)
            assert target is not None
            if body.get("type") == 7:
                if "content" in data:
                    target["content"] = content
                    self.edits[target["id"]].append(content)
                if "components" in data:
                    target["components"] = data["components"] or []
            self.interaction_callbacks[interaction_id] = {**body, "token": token}
            self._touch()
            return _json(
                {
                    "interaction": {
                        "id": interaction_id,
                        "type": 3,
                        "response_message_id": target["id"],
                        "response_message_loading": False,
                        "response_message_ephemeral": False,
                    },
                    "resource": {"type": body["type"], "message": target},
                }
            )
        channel_id = self._interaction_channel(interaction_id)
        message = self._message_payload(channel_id, self.bot, content)
        message["flags"] = data.get("flags", 0)
        message["webhook_id"] = self.application_id
        self.interaction_messages[token] = message
        self.interaction_callbacks[interaction_id] = {**body, "token": token}
        return _json(
            {
                "interaction": {
                    "id": interaction_id,
                    "type": 2,
                    "response_message_id": message["id"],
                    "response_message_loading": body.get("type") == 5,
                    "response_message_ephemeral": bool(data.get("flags", 0) & 64),
                },
                "resource": {"type": body.get("type", 4), "message": message},
            }
        )

    async def _get_original(self, _body: Any, _app: str, token: str) -> web.Response:
        message = self.interaction_messages.get(token)
        if message is None:
            return _error(404, "Unknown Message", 10008)
        return _json(message)

    async def _patch_original(self, body: Any, _app: str, token: str) -> web.Response:
        message = self.interaction_messages.get(token)
        if message is None:
            return _error(404, "Unknown Message", 10008)
        content = (body or {}).get("content")
        if content is not None:
            if utf16_len(content) > 2000:
                return self._too_long(content)
            message["content"] = content
            self.edits[message["id"]].append(content)
        message["edited_timestamp"] = now_iso()
        return _json(message)

    async def _delete_original(self, _body: Any, _app: str, token: str) -> web.Response:
        self.interaction_messages.pop(token, None)
        return web.Response(status=204)

    async def _post_followup(self, body: Any, _app: str, token: str) -> web.Response:
        content = (body or {}).get("content") or ""
        if utf16_len(content) > 2000:
            return self._too_long(content)
        message = self._message_payload(self.general_id, self.bot, content)
        self.followups[token].append(message)
        return _json(message)
