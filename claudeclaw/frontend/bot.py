"""The Discord frontend: a discord.py client wired to the routing API.

One :class:`DiscordFrontend` per daemon. For every message it asks
:func:`~claudeclaw.frontend.routing.route_message` whether to answer and under which
session key, builds the prompt (downloading attachments), submits it through the
:class:`~claudeclaw.api.Dispatcher` in its channel's arrival order, has
:mod:`~claudeclaw.frontend.follow` show the run, and has
:mod:`~claudeclaw.frontend.answers` post the answer (until Discord took it).

Thread events (delete, archive, create, rejoin) go to :mod:`~claudeclaw.frontend.threads`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import aiohttp
import discord
from discord import app_commands

from claudeclaw import ipc
from claudeclaw.api import Dispatcher
from claudeclaw.config import Settings
from claudeclaw.errors import ClaudeclawError, ConfigError, DiscordLoginRejected
from claudeclaw.frontend import outbound, ratelimits, wirejson
from claudeclaw.frontend.announce import NoticePoster
from claudeclaw.frontend.answers import AnswerPoster
from claudeclaw.frontend.approvals import ApprovalPrompts
from claudeclaw.frontend.attachments import (
    AttachmentFacts,
    Download,
    collect_attachments,
    prune_inbox,
    store_inbox_file,
)
from claudeclaw.frontend.catchup import CATCH_UP_SECONDS, ChannelMemory, missed_messages
from claudeclaw.frontend.commands import build_commands
from claudeclaw.frontend.delivery import NO_MENTIONS, ReplyDelivery
from claudeclaw.frontend.follow import ACCEPTED, KEPT, RunFollower, RunView
from claudeclaw.frontend.prompt import PromptParts, build_prompt
from claudeclaw.frontend.routing import (
    NOT_FOR_US,
    MessageFacts,
    Route,
    ignored_hint,
    is_authorized,
    route_message,
    strip_mentions,
)
from claudeclaw.frontend.threads import ThreadKeeper
from claudeclaw.logs import get_logger
from claudeclaw.model import (
    PendingMessage,
    ReplyTo,
    RunEvent,
    SessionKey,
    parse_time,
    session_key,
)
from claudeclaw.paths import ProjectPaths
from claudeclaw.redaction import register_secret
from claudeclaw.service import find_service, token_source_text
from claudeclaw.tasks import TaskSet

log = get_logger(component="discord")

UNAUTHORIZED = "Unauthorized."
SEEN_MESSAGES = 5000  # message ids remembered to drop a replayed MESSAGE_CREATE
MAX_INLINE_PROMPT_BYTES = 1024 * 1024  # a larger prompt is saved to a file Claude reads


LOGIN_REJECTED = (
    "Discord rejected the token (401) from {source}: check it (Discord Developer Portal → "
    "your application → Bot → Reset Token, then update it there)"
)
LOGIN_MISSING = (
    "no Discord bot token: set discord.token in settings.json or the DISCORD_TOKEN "
    "environment variable (see docs/DISCORD.md)"
)
INTENT_REFUSED = (
    "Discord refused the Message Content intent (close code 4014): enable it in the "
    "Developer Portal → your application → Bot → Privileged Gateway Intents → "
    "Message Content Intent"
)
NO_ALLOWLIST = (
    "discord.allowedUserIds is empty, so the bot answers nobody: add your Discord user id "
    '(Settings → Advanced → Developer Mode, then right-click yourself → Copy User ID) or "*" '
    "for everyone to discord.allowedUserIds in settings.json, then run claudeclaw reload"
)


def bot_intents() -> discord.Intents:
    """Guilds, guild messages, DMs and message content (privileged); no members/presence."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True
    return intents


class _Client(discord.Client):
    """discord.py client whose events are handled by its :class:`DiscordFrontend`."""

    def __init__(self, frontend: DiscordFrontend, **options: Any) -> None:
        options.setdefault("intents", bot_intents())
        options.setdefault("allowed_mentions", NO_MENTIONS)
        options.setdefault("chunk_guilds_at_startup", False)
        options.setdefault("member_cache_flags", discord.MemberCacheFlags.none())
        options.setdefault("max_messages", None)  # nothing reads it; it would hold prompts
        super().__init__(**options)
        outbound.install(self.http)  # every text sent through REST passes the one scrub
        wirejson.install()  # Discord's JSON through orjson, falling back where it refuses
        ratelimits.install(self.http)  # idle buckets swept every 30 s, not per new bucket
        self.frontend = frontend
        self.tree: app_commands.CommandTree[_Client] = app_commands.CommandTree(self)
        self._drop_own_echoes()

    def _drop_own_echoes(self) -> None:
        """The gateway echoes every message the bot posts (each reply, each chunk of a
        long one). discord.py would build a full ``Message`` of each, and a task for
        ``on_message``, only for :meth:`DiscordFrontend._take` to drop it: ~0.4 ms of a
        message's CPU (bench/message.py). Drop the echo at its raw payload instead.
        Nothing reads the bot's own messages from the gateway (the message cache is off;
        catch-up reads history, where ``_take`` still skips them)."""
        parsers: dict[str, Callable[[Any], None]] = self._connection.parsers
        parse = parsers.get("MESSAGE_CREATE")
        if parse is None:  # (another discord.py: the echo is dropped in _take, as before)
            return

        def parse_message_create(data: Any) -> None:
            author = data.get("author") if isinstance(data, dict) else None
            if isinstance(author, dict) and author.get("id") == self.frontend._bot_id():
                return
            parse(data)

        parsers["MESSAGE_CREATE"] = parse_message_create

    async def setup_hook(self) -> None:
        await self.frontend._setup_hook()

    async def on_ready(self) -> None:
        await self.frontend._on_connected("ready")

    async def on_resumed(self) -> None:
        await self.frontend._on_connected("resumed")

    async def on_disconnect(self) -> None:
        self.frontend._connected = False

    async def on_message(self, message: discord.Message) -> None:
        self.frontend._take(message, from_gateway=True)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        # slash commands are the tree's; a press on an approval button is ours
        await self.frontend.approvals.on_press(interaction)

    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await self.frontend.threads.on_deleted(payload.thread_id)

    async def on_raw_thread_update(self, payload: discord.RawThreadUpdateEvent) -> None:
        await self.frontend.threads.on_updated(payload)

    async def on_thread_create(self, thread: discord.Thread) -> None:
        await self.frontend.threads.on_created(thread)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("discord.event_failed", event=event_method)


class _IntakeTurn:
    """Keeps a channel's messages in arrival order up to their session's queue.

    Preparing a message takes awaits (a reaction, attachment downloads), so a short message
    could overtake a long one sent just before it in the same thread. Each message waits for
    its predecessor to be queued before it submits; the preparation itself still overlaps.
    """

    def __init__(self, before: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
        self._before = before
        self._mine = mine

    async def wait_for_predecessor(self) -> None:
        if self._before is not None and not self._before.done():
            await asyncio.shield(self._before)

    def done(self) -> None:
        """This message is queued (or will never be): the next may follow, once every
        earlier one is too (an ignored message must not let a later one overtake an
        earlier one still being prepared)."""
        if self._mine.done():
            return
        before = self._before
        if before is None or before.done():
            self._mine.set_result(None)
        else:
            before.add_done_callback(self._after_before)

    def _after_before(self, _: asyncio.Future[None]) -> None:
        if not self._mine.done():
            self._mine.set_result(None)


class DiscordFrontend:
    """The Discord side of the daemon (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        paths: ProjectPaths,
        *,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._settings = settings
        self._dispatcher = dispatcher
        self._paths = paths
        self._client = _Client(self, **dict(client_options or {}))
        self.ready = asyncio.Event()
        self._connected = False
        self._synced = False
        self._connect_task: asyncio.Task[None] | None = None
        self._tasks = TaskSet("discord")
        # per channel: the "queued" signal of the latest message (FIFO from Discord on)
        self._intake: dict[int, asyncio.Future[None]] = {}
        self.intake_waiting = 0  # messages ready to submit, waiting for their predecessor
        self._explained: set[str] = set()  # channels where an ignored message was explained
        # ids of recent messages already taken in: a replayed MESSAGE_CREATE is dropped
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._ledger_handed = False  # resume() ran: catch-up may start
        self._catch_up_due = False  # a fresh gateway session: catch up once the ledger is in
        self._channels = ChannelMemory(paths.discord_channels_file)
        self.delivery = ReplyDelivery(settings, paths)
        self.approvals = ApprovalPrompts(dispatcher, self.is_authorized)
        self.follower = RunFollower(self._client, settings, self.delivery, self.approvals)
        self.threads = ThreadKeeper(self._client, dispatcher, settings)
        self.notices = NoticePoster(self._client, settings, paths)  # job results, notices
        self.on_connected: Callable[[], None] | None = None  # the daemon: post what waited
        self.answers = AnswerPoster(dispatcher, self.delivery, self.follower, self._tasks)
        self.prune_interval_seconds = 3600.0
        for command in build_commands(self):
            self._client.tree.add_command(command)
        self._client.tree.error(self._on_command_error)

    # ---- host properties (used by commands.py) ----------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher

    @property
    def project_root(self) -> Path:
        return self._paths.root

    @property
    def client(self) -> discord.Client:
        return self._client

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Log in (a bad token raises :class:`ConfigError`), then connect in the background."""
        token = self._settings.discord.token
        if not token:
            raise ConfigError(LOGIN_MISSING)
        register_secret(token)
        self._log_access()
        try:
            await self._client.login(token)
        except discord.LoginFailure:
            source = await self._token_source()
            log.error("discord.login_failed", reason="token rejected (401)", source=source)
            await self._client.close()
            raise DiscordLoginRejected(LOGIN_REJECTED.format(source=source)) from None
        log.info("discord.logged_in", user_id=self._bot_id())
        self._connect_task = asyncio.create_task(self._connect(), name="discord-connect")
        self._tasks.start(self._prune_loop(), "prune")

    async def _connect(self) -> None:
        try:
            await self._client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            log.error("discord.intent_refused", intent="message_content")
            raise DiscordLoginRejected(INTENT_REFUSED) from None
        except discord.ConnectionClosed as exc:
            if exc.code == 4004:
                source = await self._token_source()
                log.error("discord.login_failed", reason="gateway closed 4004", source=source)
                raise DiscordLoginRejected(LOGIN_REJECTED.format(source=source)) from None
            raise
        finally:
            self._connected = False

    async def _token_source(self) -> str:
        """Where the token came from, naming the installed unit's file when it is ours."""
        layout = await asyncio.to_thread(find_service)
        if layout is not None and layout.project != self._paths.root:
            layout = None
        return token_source_text(self._settings.discord.token_source, layout)

    async def wait_ready(self) -> None:
        """Wait for :attr:`ready`; raise instead if the client stops first (e.g. the
        gateway refused the token or the Message Content intent: :class:`ConfigError`)."""
        if self._connect_task is None:
            raise RuntimeError("DiscordFrontend.start() was not called")
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait({ready, self._connect_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self.ready.is_set():
            await asyncio.shield(self._connect_task)  # raises its error
            raise ConnectionError("the Discord client stopped before it was ready")

    async def wait_closed(self) -> None:
        """Return when the client has stopped for good (raise if it stopped on an error)."""
        if self._connect_task is None:
            return
        await asyncio.shield(self._connect_task)

    async def drain(self, within: float) -> None:
        """Let message handlers deliver their last replies (bounded), before :meth:`close`.

        The daemon calls this after the worker pool has ended every run (each handler then
        holds a final event to post), so a stop does not swallow replies.
        """
        handlers = self._tasks.named("message")
        if handlers:
            await asyncio.wait(handlers, timeout=within)
        reactions = list(self.follower.tasks)  # the last ✅/❌, best effort
        if reactions:
            await asyncio.wait(reactions, timeout=min(within, 2.0))

    async def close(self) -> None:
        """Disconnect and stop every task this frontend started."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await self._client.close()
        await self._tasks.cancel_all()
        await self.follower.tasks.cancel_all()
        if self._connect_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._connect_task
        self._connected = False
        log.info("discord.closed")

    def apply_settings(self, settings: Settings) -> None:
        """Take new settings (reload): allowlist, listen lists, intervals apply at once."""
        old = self._settings
        self._settings = settings
        self.delivery.settings = settings
        self.follower.settings = settings
        self.threads.settings = settings
        self.notices.settings = settings
        if settings.discord.token != old.discord.token:
            log.warning("discord.token_changed", hint="restart claudeclaw to use the new token")
        if settings.discord.token:
            register_secret(settings.discord.token)
        self._log_access()
        log.info(
            "discord.settings_applied",
            allowed_users=len(settings.discord.allowed_user_ids),
            listen_channels=len(settings.discord.listen_channels),
            listen_guilds=len(settings.discord.listen_guilds),
        )

    def summary(self) -> dict[str, object]:
        """For STATUS / ``claudeclaw status``."""
        latency = self._client.latency
        return {
            "connected": self._connected and not self._client.is_closed(),
            "ready": self.ready.is_set(),
            "guilds": len(self._client.guilds),
            "latency_ms": round(latency * 1000) if math.isfinite(latency) else None,
            "user_id": self._bot_id() or None,
            "undeliverable_answers": self.answers.undeliverable,
        }

    def _log_access(self) -> None:
        discord_settings = self._settings.discord
        if discord_settings.allow_everyone:
            log.warning("discord.allowlist_open", hint='allowedUserIds is "*": anyone may use it')
        elif not discord_settings.allowed_user_ids:
            log.warning("discord.allowlist_empty", hint=NO_ALLOWLIST)

    async def _setup_hook(self) -> None:
        await self._sync_commands()

    async def _sync_commands(self) -> None:
        try:
            synced = await self._client.tree.sync()
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.error("discord.commands_sync_failed", error=type(exc).__name__)
            return
        self._synced = True
        log.info("discord.commands_synced", count=len(synced))

    async def _on_connected(self, how: str) -> None:
        self._connected = True
        log.info("discord.connected", how=how, guilds=len(self._client.guilds))
        if not self._synced:
            await self._sync_commands()
        if self._synced:
            self.ready.set()
        self._tasks.start(self.threads.rejoin(), "rejoin")
        if self.on_connected is not None:
            self.on_connected()
        if how == "ready":  # a RESUME replays what was missed; a fresh session does not
            self._catch_up_due = True
            self._maybe_catch_up()

    def _maybe_catch_up(self) -> None:
        if self._catch_up_due and self._ledger_handed:
            self._catch_up_due = False
            self._tasks.start(self._catch_up(), "catch-up")

    async def _catch_up(self) -> None:
        """Answer, in order, the messages sent to the bot while it was not connected
        (bounded: see ``catchup.py``), after the messages the pending ledger hands over."""
        channels = await self.threads.recent_channels()
        channels += [int(c) for c in self._settings.discord.listen_channels if c.isdigit()]
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=CATCH_UP_SECONDS)
        channels += self.threads.active_listened_threads(since)
        channels += await asyncio.to_thread(self._channels.recent, time.time())
        missed = await missed_messages(self._client, channels)
        taken = 0
        for message in missed:
            taken += self._take(message, from_gateway=False)
        log.info("discord.caught_up", messages=taken, channels=len(channels))

    async def _on_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        cause = error.__cause__ or error
        name = interaction.command.name if interaction.command is not None else "?"
        log.error(
            "discord.command_failed", command=name, error=type(cause).__name__, exc_info=cause
        )
        text = "❌ That command failed; the daemon log has the details."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("discord.command_error_reply_failed", status=exc.status)

    def _bot_id(self) -> str:
        user = self._client.user
        return str(user.id) if user is not None else ""

    async def _prune_loop(self) -> None:
        while True:
            discord_settings = self._settings.discord
            try:
                removed = await asyncio.to_thread(
                    prune_inbox, self._paths.inbox_dir, discord_settings.inbox_max_age_hours
                )
            except OSError as exc:
                log.warning("discord.inbox_prune_failed", error=type(exc).__name__)
            else:
                if removed:
                    log.info("discord.inbox_pruned", removed=removed)
            await asyncio.sleep(self.prune_interval_seconds)

    # ---- messages ----------------------------------------------------------------------

    async def _facts(self, message: discord.Message) -> MessageFacts:
        channel: Any = message.channel
        guild_id = str(message.guild.id) if message.guild is not None else None
        if guild_id is not None and isinstance(channel, discord.PartialMessageable):
            # A thread we have not cached (e.g. one unarchived while we were away).
            with contextlib.suppress(discord.HTTPException):
                channel = await self._client.fetch_channel(channel.id)
        parent = str(channel.parent_id) if isinstance(channel, discord.Thread) else None
        replied_to: str | None = None
        reference = message.reference
        if reference is not None:
            resolved = reference.resolved or reference.cached_message
            if isinstance(resolved, discord.Message):
                replied_to = str(resolved.author.id)
        return MessageFacts(
            author_id=str(message.author.id),
            author_is_bot=message.author.bot,
            message_type=message.type.value,
            content=message.content,
            channel_id=str(message.channel.id),
            guild_id=guild_id,
            thread_parent_id=parent,
            has_attachments=bool(message.attachments),
            mentioned_user_ids=tuple(str(user.id) for user in message.mentions),
            replied_to_author_id=replied_to,
        )

    def mark_seen(self, message_ids: Iterable[str]) -> None:
        """Messages the daemon already holds (its ledger): never taken in again, e.g. by
        the catch-up of a frontend that replaced another one."""
        for message_id in message_ids:
            with contextlib.suppress(ValueError):
                self._first_sight(int(message_id))

    def _take(self, message: discord.Message, *, from_gateway: bool) -> bool:
        """Start ``message`` on its way, in its channel's arrival order, unless it is our
        own (the gateway echoes every reply; history holds them) or was taken before (a
        gateway replay, or catch-up reading one the gateway brought). True if taken."""
        if str(message.author.id) == self._bot_id():
            return False  # never even looked at: no intake turn, no task
        if not self._first_sight(message.id):
            if from_gateway:
                log.info("discord.message_duplicate", message_id=message.id)  # a replay
            return False
        turn = self._intake_turn(message.channel.id)
        self._tasks.start(self._on_message(message, turn), "message")
        return True

    def _first_sight(self, message_id: int) -> bool:
        """True the first time a message id is seen (the last SEEN_MESSAGES are kept):
        the gateway can deliver one MESSAGE_CREATE twice, and a message runs once."""
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        while len(self._seen) > SEEN_MESSAGES:
            self._seen.popitem(last=False)
        return True

    def _intake_turn(self, channel_id: int) -> _IntakeTurn:
        """This message's place in its channel's intake line (see :class:`_IntakeTurn`)."""
        before = self._intake.get(channel_id)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._intake[channel_id] = mine

        def forget(done: asyncio.Future[None]) -> None:
            if self._intake.get(channel_id) is done:
                del self._intake[channel_id]

        mine.add_done_callback(forget)
        return _IntakeTurn(before, mine)

    async def _on_message(self, message: discord.Message, turn: _IntakeTurn) -> None:
        try:
            await self._handle_message(message, turn)
        finally:
            turn.done()  # ignored, refused or failed: the next message need not wait

    async def _handle_message(self, message: discord.Message, turn: _IntakeTurn) -> None:
        bot_id = self._bot_id()
        facts = await self._facts(message)
        discord_settings = self._settings.discord
        route = route_message(facts, discord_settings, bot_id)
        if (
            route.reason == NOT_FOR_US
            and facts.is_thread
            and discord_settings.answer_in_session_threads
            and is_authorized(facts.author_id, discord_settings)
        ):
            await turn.wait_for_predecessor()  # a mention just before may start the session
            if self._dispatcher.has_session(session_key(facts.channel_id)):
                facts = dataclasses.replace(facts, thread_has_session=True)
                route = route_message(facts, discord_settings, bot_id)
        if route.action == "ignore":
            hint = ignored_hint(route, facts, discord_settings)
            if hint is not None and facts.channel_id not in self._explained:
                self._explained.add(facts.channel_id)  # once per channel, not per message
                log.info(
                    "discord.message_ignored",
                    reason=route.reason,
                    hint=hint,
                    channel_id=facts.channel_id,
                    user_id=facts.author_id,
                    message_id=message.id,
                )
            else:
                log.debug("discord.message_ignored", reason=route.reason, message_id=message.id)
            return
        if route.action == "refuse":
            log.info("discord.message_refused", user_id=message.author.id, message_id=message.id)
            with contextlib.suppress(discord.HTTPException):
                await message.channel.send(UNAUTHORIZED, allowed_mentions=NO_MENTIONS)
            return
        await self._answer(message, facts, route, turn)

    async def _build_prompt(
        self, message: discord.Message, facts: MessageFacts, key: SessionKey
    ) -> str:
        discord_settings = self._settings.discord
        pairs: list[tuple[AttachmentFacts, Download]] = [
            (
                AttachmentFacts(
                    id=str(att.id),
                    filename=att.filename,
                    content_type=att.content_type or "",
                    size=att.size,
                    is_voice=att.is_voice_message(),
                ),
                att.read,
            )
            for att in message.attachments
        ]
        lines = await collect_attachments(
            pairs,
            inbox_root=self._paths.inbox_dir,
            key=str(key),
            max_bytes=discord_settings.max_attachment_bytes,
            max_inline_chars=discord_settings.max_inline_text_chars,
        )
        parts = PromptParts(
            now=dt.datetime.now(dt.UTC),
            offset_minutes=self._settings.timezone_offset_minutes,
            is_dm=facts.is_dm,
            channel_id=facts.channel_id,
            username=message.author.name,
            text=strip_mentions(message.content, self._bot_id()),
            channel_names=discord_settings.channel_names,
            thread_parent_id=facts.thread_parent_id,
            attachment_lines=lines,
        )
        prompt = build_prompt(parts)
        if ipc.json_size(prompt) <= MAX_INLINE_PROMPT_BYTES:
            return prompt
        # Too large to pass to a session (a long text, many big attachments): Claude reads
        # it from a file instead of the message never reaching it.
        body = "\n".join([f"Message: {parts.text}" if parts.text else "", *lines]).strip()
        inbox = self._paths.inbox_dir
        try:
            path = await asyncio.to_thread(
                store_inbox_file,
                inbox / str(key),
                inbox,
                f"{message.id}-message.txt",
                body.encode(),
            )
        except (OSError, ClaudeclawError) as exc:  # the daemon refuses it clearly then
            log.error("discord.prompt_save_failed", error=str(exc), message_id=message.id)
            return prompt
        log.info("discord.prompt_saved_to_file", chars=len(body), message_id=message.id)
        note = (
            f"(This message and its attachments are {len(body):,} characters, too large to "
            f"include here. The whole of it is saved at {path}: read that file.)"
        )
        return build_prompt(dataclasses.replace(parts, text=note, attachment_lines=()))

    async def _answer(
        self, message: discord.Message, facts: MessageFacts, route: Route, turn: _IntakeTurn
    ) -> None:
        assert route.key is not None
        key = route.key
        view = RunView()
        fields = {"session_key": key, "message_id": message.id, "channel_id": message.channel.id}
        log.info(
            "discord.message_accepted",
            trigger=route.reason,
            length=len(message.content),
            attachments=len(message.attachments),
            **fields,
        )
        now = time.time()
        if self._noted_for_catch_up(message.channel) and not self._channels.fresh(
            message.channel.id, now
        ):
            # The channel is on disk before anything else happens to the message (a
            # reaction, an attachment download): a daemon killed before the ledger has the
            # message finds it again by catching up in this channel. One durable write per
            # channel every NOTE_EVERY_SECONDS, so few messages wait for it.
            await self._note_channel(message.channel.id, now)
        self.follower.acknowledge(message, view)  # ⚙️ when it starts, or 👀 if it waits
        prompt = await self._build_prompt(message, facts, key)
        await self._run_prompt(message, key, prompt, view, turn)

    def _noted_for_catch_up(self, channel: discord.abc.Messageable) -> bool:
        """Whether catch-up needs the channel on disk: not a listened thread (it finds
        those among the active threads the gateway lists; one durable write fewer for
        each new thread)."""
        return not (isinstance(channel, discord.Thread) and self.threads.listened(channel))

    async def _note_channel(self, channel_id: int, now: float) -> None:
        """Remember the channel for catch-up after a stop (a file write: in a thread)."""
        try:
            await asyncio.to_thread(self._channels.note, channel_id, now)
        except (OSError, ClaudeclawError) as exc:  # catch-up here is the loss, not the reply
            log.warning("discord.channel_memory_failed", error=str(exc))

    async def _run_prompt(
        self,
        message: discord.Message,
        key: SessionKey,
        prompt: str,
        view: RunView,
        turn: _IntakeTurn,
    ) -> None:
        """Queue ``prompt`` in its turn, follow the run, and answer ``message``."""
        fields = {"session_key": key, "message_id": message.id, "channel_id": message.channel.id}
        self.intake_waiting += 1
        try:
            await turn.wait_for_predecessor()
        finally:
            self.intake_waiting -= 1
        stream: AsyncIterator[RunEvent] = self._dispatcher.submit(
            key,
            prompt,
            origin="discord",
            reply_to=ReplyTo(str(message.channel.id), str(message.id)),
            label=message.channel.name if isinstance(message.channel, discord.Thread) else "",
        )
        # each event says it is in its session's queue: the next message may follow
        final = await self.follower.follow(message, stream, view, fields, turn.done)
        await self.answers.post_answer(message, key, final, view, fields)

    async def resume(self, items: list[PendingMessage]) -> None:
        """Answer the messages an earlier run of the daemon accepted but did not answer.

        They keep their order (intake turns are taken now, in ledger order). One that has
        its answer already gets it posted; one that was already running when the daemon
        stopped is not run again (its tools may have acted): its author is told it was
        interrupted; the others run now.
        """
        self.mark_seen(item.reply_to.message_id for item in items)  # not caught up again
        for item in items:
            turn = self._intake_turn(int(item.reply_to.channel_id))
            self._tasks.start(self._resume_one(item, turn), "message")
        self._ledger_handed = True
        self._maybe_catch_up()

    async def _resume_one(self, item: PendingMessage, turn: _IntakeTurn) -> None:
        fields = {
            "session_key": item.key,
            "message_id": item.reply_to.message_id,
            "channel_id": item.reply_to.channel_id,
        }
        message = await self._pending_message(item, fields)
        if message is None:
            turn.done()
            return
        accepted = parse_time(item.accepted_at)  # images Claude wrote since then are posted
        view = RunView(reaction=KEPT, accepted_at=accepted.timestamp() if accepted else time.time())
        if item.answer is not None or item.started:  # not run again
            turn.done()
            await self.answers.post_left_over(item, message, view, fields)
            return
        log.info("discord.pending_resumed", **fields)
        await self.follower.react(message, view, ACCEPTED)
        try:
            await self._run_prompt(message, item.key, item.prompt, view, turn)
        finally:
            turn.done()

    async def _pending_message(
        self, item: PendingMessage, fields: dict[str, Any]
    ) -> discord.Message | None:
        """The message ``item`` answers; None when there is nothing to post there (the
        ledger lets ``item`` go if Discord says it is gone, else keeps it for the next
        start). An answer is posted even when its message or channel is gone: beside a
        deleted message as a plain message; to a channel gone or barred it is refused,
        kept on disk and given up (:mod:`~claudeclaw.frontend.answers`)."""
        channel: Any = None
        try:
            channel_id = int(item.reply_to.channel_id)
            message_id = int(item.reply_to.message_id)
            channel = self._client.get_channel(channel_id)
            if channel is None:
                channel = await self._client.fetch_channel(channel_id)
            return await channel.fetch_message(message_id)  # type: ignore[no-any-return]
        except (discord.HTTPException, AttributeError, ValueError) as exc:
            final = isinstance(exc, discord.NotFound | discord.Forbidden)
            if final and item.answer is not None:  # Claude's answer is not thrown away
                log.info("discord.pending_message_gone", error=type(exc).__name__, **fields)
                partial = channel or self._client.get_partial_messageable(channel_id)
                # a PartialMessage has all that posting uses: id, channel, to_reference
                return cast(discord.Message, partial.get_partial_message(message_id))
            gone = final or not isinstance(exc, discord.HTTPException)
            log.warning("discord.pending_lost", error=type(exc).__name__, gone=gone, **fields)
            if gone:  # else Discord failed for now: the ledger keeps it for the next start
                self._dispatcher.delivered(item.msg_id)
            return None

    def is_authorized(self, user_id: str) -> bool:
        return is_authorized(user_id, self._settings.discord)


__all__ = ["DiscordFrontend", "bot_intents"]
