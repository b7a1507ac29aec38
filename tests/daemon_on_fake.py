"""``claudeclaw run`` against the loopback fake Discord, for the fault suite.

A real daemon process (so a test can SIGTERM or SIGKILL it at any step of a message's
life) whose discord.py talks to the fake of the test process: the REST base and the
gateway URL come from ``FAKE_DISCORD_API`` and ``FAKE_DISCORD_GATEWAY``.
"""

from __future__ import annotations

import os
import sys

import discord.gateway
import discord.http
import yarl


def main() -> int:
    discord.http.Route.BASE = os.environ["FAKE_DISCORD_API"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["FAKE_DISCORD_GATEWAY"])
    from claudeclaw.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
