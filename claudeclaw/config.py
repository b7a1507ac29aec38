"""settings.json: the original ClaudeClaw's keys plus claudeclaw's own, validated once.

Loading turns the JSON file into frozen dataclasses; every later reader uses the typed
values. Errors name the key path, the bad value, what was expected and how to fix it.
Secrets (``discord.token``, ``api``) are excluded from ``repr`` so they never reach a log.

STUB: the loader below is a placeholder; the validating loader replaces it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

SecurityLevel = Literal["locked", "strict", "moderate", "unrestricted"]
SessionScope = Literal["thread", "channel"]


def default_max_concurrent_runs() -> int:
    """One ``claude`` per core (each is ~200 MB and CPU-hungry at start), between 2 and 8."""
    return max(2, min(8, os.cpu_count() or 2))


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    level: SecurityLevel = "moderate"
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DiscordSettings:
    token: str = field(default="", repr=False)
    token_source: str = ""  # "credential", "env" or "settings"; "" when there is none
    allowed_user_ids: tuple[str, ...] = ()  # empty: nobody (fail closed)
    allow_everyone: bool = False  # allowedUserIds: "*" (deliberately open)
    listen_channels: tuple[str, ...] = ()
    listen_guilds: tuple[str, ...] = ()
    channel_names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    image_output_roots: tuple[str, ...] = ()
    # ours
    session_scope: SessionScope = "thread"  # "channel": each guild channel its own session
    remove_session_on_archive: bool = False
    progress_after_seconds: float = 5.0
    progress_edit_interval_seconds: float = 3.0
    max_attachment_bytes: int = 8 * 1024 * 1024
    max_inline_text_chars: int = 51_200
    inbox_max_age_hours: float = 72.0


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    claude_path: str = "claude"
    idle_timeout_seconds: float = 600.0  # no stream event for this long: kill the run
    hard_timeout_seconds: float = 3600.0  # wall clock cap per run
    kill_grace_seconds: float = 5.0  # SIGTERM -> this long -> SIGKILL (whole process group)
    append_system_prompt: str = ""  # added after claudeclaw's own system prompt text


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_concurrent_runs: int = field(default_factory=default_max_concurrent_runs)
    max_workers: int = 64
    worker_idle_seconds: float = 600.0
    shutdown_grace_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Settings:
    model: str = ""
    api: str = field(default="", repr=False)
    timezone: str = "UTC"
    timezone_offset_minutes: int = 0
    security: SecuritySettings = field(default_factory=SecuritySettings)
    timeouts: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    source: Path | None = None  # the file these came from


def load_settings(path: Path) -> Settings:  # pragma: no cover - replaced by the real loader
    """Placeholder: defaults only."""
    return Settings(source=path)
