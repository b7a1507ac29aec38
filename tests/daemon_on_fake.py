"""``claudeclaw run`` against the loopback fake Discord, for the fault suite.

A real daemon process (so a test can SIGTERM or SIGKILL it at any step of a message's
life) whose discord.py talks to the fake of the test process: the REST base and the
gateway URL come from ``FAKE_DISCORD_API`` and ``FAKE_DISCORD_GATEWAY``.

Two waits are shortened (the in-process daemons of the tests shorten the first alike):

* the client does not wait for more guilds than the fake's (they all come at once):
  discord.py's 2 s ``guild_ready_timeout`` would delay every start's ``on_ready`` (the
  pending answers, the catch-up) by 2 s;
* a stop gives the frontend :data:`DRAIN_SECONDS` to post its last answers, not the
  daemon's 10 s: the fault suite stops it while Discord refuses or hangs, so that bound is
  waited out in full, and what is not posted within it stays in the pending ledger for the
  restart either way.

``FAKE_SLOW_CHANNEL_NOTE`` (seconds) makes the channel-memory write that slow, the way a
busy disk would: a test can then catch a step that overtakes it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import discord.gateway
import discord.http
import yarl

GUILD_READY_TIMEOUT = 0.01
DRAIN_SECONDS = 1.0


def main() -> int:
    from claudeclaw.supervisor import Supervisor

    supervisor_init = Supervisor.__init__

    def short_drain(self: Supervisor, *args: Any, **kwargs: Any) -> None:
        supervisor_init(self, *args, **kwargs)
        self.drain_seconds = DRAIN_SECONDS

    Supervisor.__init__ = short_drain  # type: ignore[method-assign]
    client_init = discord.Client.__init__

    def fast_ready(self: discord.Client, *args: Any, **options: Any) -> None:
        options.setdefault("guild_ready_timeout", GUILD_READY_TIMEOUT)
        client_init(self, *args, **options)

    discord.Client.__init__ = fast_ready  # type: ignore[method-assign]
    slow_note = float(os.environ.get("FAKE_SLOW_CHANNEL_NOTE", "0"))
    if slow_note:
        import time

        from claudeclaw.frontend.catchup import ChannelMemory

        note = ChannelMemory.note

        def slow(self: ChannelMemory, channel_id: int, now: float) -> bool:
            time.sleep(slow_note)  # runs in a worker thread, like the real write
            return note(self, channel_id, now)

        ChannelMemory.note = slow  # type: ignore[method-assign]
    discord.http.Route.BASE = os.environ["FAKE_DISCORD_API"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["FAKE_DISCORD_GATEWAY"])
    from claudeclaw.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
