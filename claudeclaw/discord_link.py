"""The daemon's side of Discord: while there is a token, one frontend, kept connected.

``frontend/keeper.py`` retries the connection (capped backoff, forever; only Discord's
refusal of the token or an intent is fatal). This module makes each frontend it tries,
hands a connected one to the dispatcher (which gives it what waited) and takes it back
when the connection is lost, says how Discord is for systemd's status line, drops the
frontend when a reload brings a new token, and closes it after its last answers when the
daemon stops. discord.py is imported only once there is a token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from claudeclaw.dispatch import SessionDispatcher
from claudeclaw.errors import DiscordLoginRejected


class DiscordLink:
    """The keeper and its frontends for ``dispatcher`` (see the module docstring).

    ``on_connected``: the frontend (re)connected (the jobs post what waited);
    ``on_fatal``: Discord refused the token or an intent after start; ``on_change``: the
    words of :meth:`status` changed.
    """

    def __init__(
        self,
        dispatcher: SessionDispatcher,
        *,
        client_options: dict[str, Any] | None,
        on_connected: Callable[[], None],
        on_fatal: Callable[[DiscordLoginRejected], None],
        on_change: Callable[[], None],
    ) -> None:
        self.dispatcher = dispatcher
        self.client_options = client_options  # discord.Client options (tests)
        self.on_connected = on_connected
        self.on_fatal = on_fatal
        self.on_change = on_change
        self.keeper: Any = None  # frontend.keeper.DiscordKeeper once there is a token

    async def begin(self, wait: float, **retry: float) -> None:
        """Keep Discord connected from now on; wait up to ``wait`` s for the first attempt.
        ``retry``: the keeper's backoff (``first_retry``, ``max_retry``). Raises
        DiscordLoginRejected only for Discord's refusal."""
        from claudeclaw.frontend.bot import DiscordFrontend  # discord.py only when needed
        from claudeclaw.frontend.keeper import DiscordKeeper

        dispatcher = self.dispatcher

        def make() -> DiscordFrontend:
            frontend = DiscordFrontend(
                dispatcher.settings,
                dispatcher,
                dispatcher.paths,
                client_options=self.client_options,
            )
            frontend.on_connected = self.on_connected
            return frontend

        def on_lost() -> None:
            dispatcher.frontend = None

        self.keeper = DiscordKeeper(
            make,
            on_ready=dispatcher.attach_frontend,
            on_lost=on_lost,
            on_fatal=self.on_fatal,
            on_change=self.on_change,
            **retry,
        )
        try:
            await self.keeper.start(wait)
        except DiscordLoginRejected:
            self.keeper = None
            raise

    async def stop_keeping(self) -> None:
        """No new connection from now on (the daemon stops)."""
        if self.keeper is not None:
            await self.keeper.stop()

    async def end(self) -> None:
        """Stop keeping Discord connected and close the frontend (a new token)."""
        if self.keeper is not None:
            await self.keeper.stop()
            self.keeper = None
        if self.dispatcher.frontend is not None:
            await self.dispatcher.frontend.close()
            self.dispatcher.frontend = None

    async def close(self, drain: float) -> None:
        """Let the frontend post its last answers for up to ``drain`` s, then close it."""
        frontend = self.dispatcher.frontend
        if frontend is None:
            return
        with contextlib.suppress(Exception):
            await frontend.drain(within=drain)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(frontend.close(), 15)

    def status(self) -> str:
        """Discord's part of systemd's STATUS= line."""
        frontend = self.dispatcher.frontend
        if frontend is not None:
            summary = frontend.summary()
            return "discord connected" if summary.get("connected") else "discord reconnecting"
        if self.keeper is not None and self.keeper.active:
            return str(self.keeper.status())
        return "local only"

    def notices(self) -> Any:
        """Where the jobs' notices go: the Discord frontend's poster, while there is one."""
        frontend = self.dispatcher.frontend
        return frontend.notices if frontend is not None else None
