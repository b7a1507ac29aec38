"""The Discord frontend: routing, prompt, rendering, attachments and the discord.py client.

Only :mod:`claudeclaw.frontend.bot` imports discord.py's client machinery; the pure
modules (``routing``, ``prompt``, ``render``, ``context``) are importable without a loop.
The supervisor uses :class:`claudeclaw.frontend.bot.DiscordFrontend`.
"""
