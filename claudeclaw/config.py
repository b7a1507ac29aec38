"""settings.json: the original ClaudeClaw's keys plus claudeclaw's own, validated once.

Loading turns the JSON file into frozen dataclasses; every later reader uses the typed
values. Errors name the key path, the bad value, what was expected and how to fix it, and
all of them are reported at once (one per line) so a user fixes the file in one pass.
Secrets (``discord.token``, ``api``) are excluded from ``repr`` and never appear in an
error message, so they never reach a log.

Keys the original has but claudeclaw does not use (heartbeat, telegram, web...) are
accepted silently, so an existing upstream ``settings.json`` loads unchanged. See
``docs/CONFIGURATION.md`` for every key.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from claudeclaw.errors import ConfigError
from claudeclaw.paths import ProjectPaths, ensure_private_dir, write_private_text
from claudeclaw.redaction import register_secret

SecurityLevel = Literal["locked", "strict", "moderate", "unrestricted"]
SessionScope = Literal["thread", "channel"]
WorkerStartMethod = Literal["forkserver", "exec"]
BusyPolicy = Literal["queue", "steer", "coalesce"]

# The resident memory of one `claude` (its process tree) while it runs a turn, and of a warm
# one between turns: bench/warm.py measured 211 MB and 196 MB with the pinned CLI 2.1.330
# and a short session; a long transcript grows the heap, hence the headroom.
RUNNING_CLAUDE_RSS_BYTES = 300 * 1024 * 1024
IDLE_CLAUDE_RSS_BYTES = 250 * 1024 * 1024


def _memory_bytes(kind: Literal["available", "total"]) -> int:
    try:
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.available if kind == "available" else memory.total)
    except Exception:  # no /proc: assume a small machine
        return 2 * 1024**3


def default_max_concurrent_runs() -> int:
    """A ``claude`` turn mostly waits on the model, so memory bounds it, not cores: half of
    the memory available now, divided by a running ``claude``'s RSS, from 4 to 64."""
    return max(4, min(64, _memory_bytes("available") // 2 // RUNNING_CLAUDE_RSS_BYTES))


def default_max_warm_sessions() -> int:
    """A quarter of the machine's memory, divided by an idle warm ``claude``'s RSS, from 1
    to 64 (its sessions beyond that run cold, the least recently used closed first)."""
    return max(1, min(64, _memory_bytes("total") // 4 // IDLE_CLAUDE_RSS_BYTES))


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    level: SecurityLevel = "moderate"
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    approvals: bool = False  # ask a person before tools the level does not settle
    approval_timeout_seconds: float = 600.0


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
    coalesce_queued_messages: bool = False  # answer what piled up while busy in one run
    warm_sessions: bool = True  # keep a thread's claude alive between its messages
    busy_policy: BusyPolicy = "queue"  # a message that arrives while a turn runs


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_concurrent_runs: int = field(default_factory=default_max_concurrent_runs)
    max_workers: int = 64
    worker_idle_seconds: float = 600.0
    shutdown_grace_seconds: float = 30.0
    worker_start_method: WorkerStartMethod = "forkserver"
    worker_nice: int = 10  # workers and their claude run this much below the supervisor
    warm_idle_seconds: float = 600.0  # a warm claude unused this long is closed
    max_warm_sessions: int = field(default_factory=default_max_warm_sessions)


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
    source: Path | None = None  # the file these came from; None: no file (defaults)
    warnings: tuple[str, ...] = ()  # unknown keys and oddities; not fatal, show them


# ---- what keys exist -------------------------------------------------------------------

# Upstream's timeout categories (minutes) and their defaults; "discord" has no default
# upstream (it fell into "default") and is only present when the file sets it.
DEFAULT_TIMEOUTS_MINUTES: Mapping[str, float] = MappingProxyType(
    {"default": 5, "telegram": 5, "heartbeat": 15, "job": 30}
)
TIMEOUT_CATEGORIES = ("default", "discord", "telegram", "heartbeat", "job")
TZ_OFFSET_MIN, TZ_OFFSET_MAX = -720, 840
CREDENTIAL_NAME = "discord-token"  # systemd LoadCredential=discord-token:<file>

_TOP_OURS = frozenset(
    {
        "model",
        "api",
        "timezone",
        "timezoneOffsetMinutes",
        "security",
        "timeouts",
        "discord",
        "runner",
        "limits",
    }
)
# The original's keys that claudeclaw does not use: accepted without a word.
_TOP_UPSTREAM_ONLY = frozenset(
    {
        "fallback",
        "agentic",
        "heartbeat",
        "telegram",
        "slack",
        "web",
        "stt",
        "sessionTimeoutMs",
        "watchdog",
        "session",
        "plugins",
        "apiToken",
        "jobsDir",
        "$schema",
    }
)
_SECURITY_KEYS = frozenset({"level", "allowedTools", "disallowedTools"})
_DISCORD_UPSTREAM = frozenset(
    {
        "token",
        "allowedUserIds",
        "listenChannels",
        "listenGuilds",
        "channelNames",
        "imageOutputRoots",
        "autoThreadChannels",  # upstream PR #268; not implemented here
    }
)
_DISCORD_OURS = frozenset(
    {
        "sessionScope",
        "removeSessionOnArchive",
        "progressAfterSeconds",
        "progressEditIntervalSeconds",
        "maxAttachmentBytes",
        "maxInlineTextChars",
        "inboxMaxAgeHours",
    }
)
_RUNNER_KEYS = frozenset(
    {
        "claudePath",
        "idleTimeoutSeconds",
        "hardTimeoutSeconds",
        "killGraceSeconds",
        "appendSystemPrompt",
        "coalesceQueuedMessages",
        "warmSessions",
        "busyPolicy",
    }
)
_LIMIT_KEYS = frozenset(
    {
        "maxConcurrentRuns",
        "maxWorkers",
        "workerIdleSeconds",
        "shutdownGraceSeconds",
        "workerStartMethod",
        "workerNice",
        "warmIdleSeconds",
        "maxWarmSessions",
    }
)

_DIGITS = re.compile(r"[0-9]+")
_UTC_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?", re.IGNORECASE)
_MISSING = object()
_DAY = 86_400.0


# ---- the validator ---------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: Any) -> str:
    """A bad value as JSON, shortened: users recognise what they typed."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fmt_num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class _Checker:
    """Collects every error and warning while reading the document."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(
        self, path: str, value: Any, expected: str, fix: str, *, secret: bool = False
    ) -> None:
        shown = f"{_json_type(value)} (value not shown: it is a secret)" if secret else _show(value)
        self.errors.append(f"{path}: got {shown}; expected {expected}. Fix: {fix}")

    def unknown_keys(
        self, obj: Mapping[str, Any], path: str, known: frozenset[str], silent: frozenset[str]
    ) -> None:
        for key in obj:
            if key in known or key in silent:
                continue
            where = f"{path}.{key}" if path else key
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            if not close:  # camelCase typos such as "allowedUserIDs"
                lowered = {k.lower(): k for k in known}
                close = [lowered[key.lower()]] if key.lower() in lowered else []
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.warnings.append(f"{where}: unknown key, ignored{hint}")

    # -- scalar readers (return the default after recording an error) --

    def section(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(key, value, "an object ({...})", f'make "{key}" an object or remove it')
            return {}
        return value

    def string(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        default: str,
        *,
        secret: bool = False,
        non_empty: bool = False,
    ) -> str:
        value = obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.error(
                path, value, "a string", 'put the value in double quotes: "..."', secret=secret
            )
            return default
        if non_empty and not value.strip():
            self.error(path, value, "a non-empty string", f"set {path} or remove the key")
            return default
        return value

    def boolean(self, obj: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(path, value, "true or false", "write true or false without quotes")
            return default
        return value

    def number(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        *,
        low: float,
        high: float,
        low_inclusive: bool = False,
        unit: str = "",
    ) -> float:
        value = obj.get(key)
        if value is None:
            return default
        bound = ">=" if low_inclusive else ">"
        expected = f"a number {bound} {_fmt_num(low)} and <= {_fmt_num(high)}{unit}"
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (value >= low if low_inclusive else value > low)
            and value <= high
        )
        if not ok:
            self.error(path, value, expected, f"set {path} to e.g. {_fmt_num(default)}")
            return default
        return float(value)

    def integer(
        self, obj: Mapping[str, Any], key: str, path: str, default: int, *, low: int, high: int
    ) -> int:
        value = obj.get(key)
        if value is None:
            return default
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and float(value).is_integer()
            and low <= value <= high
        )
        if not ok:
            self.error(
                path,
                value,
                f"a whole number from {low} to {high}",
                f"set {path} to e.g. {default}",
            )
            return default
        return int(value)

    def choice(
        self, obj: Mapping[str, Any], key: str, path: str, default: str, options: tuple[str, ...]
    ) -> str:
        value = obj.get(key)
        if value is None:
            return default
        if value not in options:
            listed = ", ".join(f'"{o}"' for o in options)
            self.error(path, value, f"one of {listed}", "use one of those (spelt exactly)")
            return default
        return cast(str, value)

    def string_list(self, obj: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = obj.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(path, value, "an array of strings", 'write it as ["...", "..."]')
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, str) and item:
                out.append(item)
            else:
                self.error(
                    f"{path}[{i}]", item, "a non-empty string", "quote it, or remove the item"
                )
        return tuple(out)

    def discord_id(self, value: Any, path: str, what: str) -> str | None:
        """A snowflake as digits; big JSON integers stay exact (json never used a float)."""
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
            return value.strip()
        self.error(
            path,
            value,
            f'a Discord {what} id (digits, e.g. "123456789012345678")',
            "in Discord enable Developer Mode, right-click → Copy ID, and paste it in quotes",
        )
        return None

    def id_list(
        self, obj: Mapping[str, Any], key: str, path: str, what: str, *, star_ok: bool = False
    ) -> tuple[str, ...]:
        value = obj.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(path, value, f"an array of {what} ids", 'write it as ["1234...", "5678..."]')
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if star_ok and item == "*":
                continue
            ident = self.discord_id(item, f"{path}[{i}]", what)
            if ident is not None and ident not in out:
                out.append(ident)
        return tuple(out)


# ---- sections --------------------------------------------------------------------------


def _timezone_offset(chk: _Checker, data: Mapping[str, Any], tz: str) -> int:
    value = data.get("timezoneOffsetMinutes")
    if value is not None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            chk.error(
                "timezoneOffsetMinutes",
                value,
                "a number of minutes east of UTC (e.g. 60, -300)",
                "set it to a number, or remove it to derive it from timezone",
            )
            return 0
        offset = round(value)
    else:
        offset = _offset_from_timezone(chk, tz)
    clamped = max(TZ_OFFSET_MIN, min(TZ_OFFSET_MAX, offset))
    if clamped != offset:
        chk.warnings.append(
            f"timezoneOffsetMinutes: {offset} is outside {TZ_OFFSET_MIN}..{TZ_OFFSET_MAX}; "
            f"using {clamped}"
        )
    return clamped


def _offset_from_timezone(chk: _Checker, tz: str) -> int:
    """Upstream's rule: ``UTC±H[:MM]`` or an IANA name (its offset now)."""
    name = tz.strip()
    if name.upper() in {"", "UTC", "GMT", "Z"}:
        return 0
    match = _UTC_OFFSET.fullmatch(name)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        return sign * (int(match.group(2)) * 60 + int(match.group(3) or 0))
    try:
        delta = datetime.now(ZoneInfo(name)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        chk.warnings.append(
            f'timezone: {_show(tz)} is neither an IANA name (e.g. "Europe/Berlin") nor '
            "UTC±H[:MM]; the clock prefix uses UTC (set timezoneOffsetMinutes to override)"
        )
        return 0
    return int(delta.total_seconds() // 60) if delta is not None else 0


def _security(chk: _Checker, data: Mapping[str, Any]) -> SecuritySettings:
    sec = chk.section(data, "security")
    chk.unknown_keys(sec, "security", _SECURITY_KEYS, frozenset())
    level = chk.choice(sec, "level", "security.level", "moderate", get_args(SecurityLevel))
    return SecuritySettings(
        level=cast(SecurityLevel, level),
        allowed_tools=chk.string_list(sec, "allowedTools", "security.allowedTools"),
        disallowed_tools=chk.string_list(sec, "disallowedTools", "security.disallowedTools"),
    )


def _timeouts(chk: _Checker, data: Mapping[str, Any]) -> dict[str, float]:
    raw = chk.section(data, "timeouts")
    chk.unknown_keys(raw, "timeouts", frozenset(TIMEOUT_CATEGORIES), frozenset())
    out: dict[str, float] = dict(DEFAULT_TIMEOUTS_MINUTES)
    for key, value in raw.items():
        if value is None:
            continue
        default = DEFAULT_TIMEOUTS_MINUTES.get(key, DEFAULT_TIMEOUTS_MINUTES["default"])
        out[key] = chk.number(
            raw, key, f"timeouts.{key}", default, low=0, high=7 * 24 * 60, unit=" (minutes)"
        )
    return out


def _token(chk: _Checker, disc: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[str, str]:
    """credential file > DISCORD_TOKEN > discord.token; returns (token, source)."""
    cred_dir = environ.get("CREDENTIALS_DIRECTORY", "")
    if cred_dir:
        cred = Path(cred_dir) / CREDENTIAL_NAME
        try:
            text = cred.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            chk.errors.append(
                f"credential {cred}: cannot be read ({reason}). Fix: check "
                f"LoadCredential={CREDENTIAL_NAME}:<file> in the systemd unit"
            )
            text = ""
        else:
            if not text:
                chk.warnings.append(f"credential {cred} is empty; ignoring it")
        if text:
            return text, "credential"
    env_token = environ.get("DISCORD_TOKEN", "").strip()
    if env_token:
        return env_token, "env"
    value = disc.get("token")
    if value is None:
        return "", ""
    if not isinstance(value, str):
        chk.error(
            "discord.token",
            value,
            "a string",
            "put the bot token in double quotes, or better, use DISCORD_TOKEN or a "
            "systemd credential",
            secret=True,
        )
        return "", ""
    token = value.strip()
    return token, ("settings" if token else "")


def _discord(chk: _Checker, data: Mapping[str, Any], environ: Mapping[str, str]) -> DiscordSettings:
    disc = chk.section(data, "discord")
    chk.unknown_keys(disc, "discord", _DISCORD_UPSTREAM | _DISCORD_OURS, frozenset())
    d = DiscordSettings()
    token, source = _token(chk, disc, environ)

    allow_everyone = False
    raw_users = disc.get("allowedUserIds")
    users: tuple[str, ...] = ()
    if raw_users == "*":
        allow_everyone = True
    elif isinstance(raw_users, list) and "*" in raw_users:
        allow_everyone = True
        users = chk.id_list(disc, "allowedUserIds", "discord.allowedUserIds", "user", star_ok=True)
    elif raw_users is not None and not isinstance(raw_users, list):
        chk.error(
            "discord.allowedUserIds",
            raw_users,
            'an array of user ids, or "*" for everyone',
            'write it as ["123456789012345678"] (or "*" to answer everyone)',
        )
    else:
        users = chk.id_list(disc, "allowedUserIds", "discord.allowedUserIds", "user")

    names: dict[str, str] = {}
    raw_names = disc.get("channelNames")
    if raw_names is not None and not isinstance(raw_names, dict):
        chk.error(
            "discord.channelNames",
            raw_names,
            'an object {"<channel id>": "<name>"}',
            'write it as {"123456789012345678": "general"}',
        )
    elif isinstance(raw_names, dict):
        for raw_key, name in raw_names.items():
            path = f"discord.channelNames[{json.dumps(raw_key)}]"
            ident = chk.discord_id(raw_key, path + " (the key)", "channel")
            if not isinstance(name, str):
                chk.error(path, name, "a string (the channel's friendly name)", "quote the name")
            elif ident is not None:
                names[ident] = name

    roots = chk.string_list(disc, "imageOutputRoots", "discord.imageOutputRoots")
    for i, root in enumerate(roots):
        if not os.path.isabs(root):
            chk.error(
                f"discord.imageOutputRoots[{i}]",
                root,
                "an absolute directory path",
                "write the full path, starting with /",
            )
    return DiscordSettings(
        token=token,
        token_source=source,
        allowed_user_ids=users,
        allow_everyone=allow_everyone,
        listen_channels=chk.id_list(disc, "listenChannels", "discord.listenChannels", "channel"),
        listen_guilds=chk.id_list(disc, "listenGuilds", "discord.listenGuilds", "server (guild)"),
        channel_names=MappingProxyType(names),
        image_output_roots=tuple(r for r in roots if os.path.isabs(r)),
        session_scope=cast(
            SessionScope,
            chk.choice(
                disc,
                "sessionScope",
                "discord.sessionScope",
                d.session_scope,
                get_args(SessionScope),
            ),
        ),
        remove_session_on_archive=chk.boolean(
            disc, "removeSessionOnArchive", "discord.removeSessionOnArchive", False
        ),
        progress_after_seconds=chk.number(
            disc,
            "progressAfterSeconds",
            "discord.progressAfterSeconds",
            d.progress_after_seconds,
            low=0,
            high=3600,
            low_inclusive=True,
            unit=" seconds",
        ),
        progress_edit_interval_seconds=chk.number(
            disc,
            "progressEditIntervalSeconds",
            "discord.progressEditIntervalSeconds",
            d.progress_edit_interval_seconds,
            low=1,
            high=3600,
            low_inclusive=True,
            unit=" seconds",
        ),
        max_attachment_bytes=chk.integer(
            disc,
            "maxAttachmentBytes",
            "discord.maxAttachmentBytes",
            d.max_attachment_bytes,
            low=1,
            high=1024**3,
        ),
        max_inline_text_chars=chk.integer(
            disc,
            "maxInlineTextChars",
            "discord.maxInlineTextChars",
            d.max_inline_text_chars,
            low=1,
            high=10_000_000,
        ),
        inbox_max_age_hours=chk.number(
            disc,
            "inboxMaxAgeHours",
            "discord.inboxMaxAgeHours",
            d.inbox_max_age_hours,
            low=0,
            high=24 * 366,
            unit=" hours",
        ),
    )


def _runner(chk: _Checker, data: Mapping[str, Any], timeouts_raw: Any) -> RunnerSettings:
    run = chk.section(data, "runner")
    chk.unknown_keys(run, "runner", _RUNNER_KEYS, frozenset())
    r = RunnerSettings()
    hard_default = r.hard_timeout_seconds
    if run.get("hardTimeoutSeconds") is None and isinstance(timeouts_raw, dict):
        # Compatibility: an upstream file's Discord (else default) timeout, in minutes.
        for category in ("discord", "default"):
            minutes = timeouts_raw.get(category)
            if (
                isinstance(minutes, int | float)
                and not isinstance(minutes, bool)
                and math.isfinite(minutes)
                and 0 < minutes <= 7 * 24 * 60
            ):
                hard_default = float(minutes) * 60
                break
    settings = RunnerSettings(
        claude_path=chk.string(
            run, "claudePath", "runner.claudePath", r.claude_path, non_empty=True
        ),
        idle_timeout_seconds=chk.number(
            run,
            "idleTimeoutSeconds",
            "runner.idleTimeoutSeconds",
            r.idle_timeout_seconds,
            low=0,
            high=_DAY,
            unit=" seconds",
        ),
        hard_timeout_seconds=chk.number(
            run,
            "hardTimeoutSeconds",
            "runner.hardTimeoutSeconds",
            hard_default,
            low=0,
            high=7 * _DAY,
            unit=" seconds",
        ),
        kill_grace_seconds=chk.number(
            run,
            "killGraceSeconds",
            "runner.killGraceSeconds",
            r.kill_grace_seconds,
            low=0,
            high=300,
            unit=" seconds",
        ),
        append_system_prompt=chk.string(
            run, "appendSystemPrompt", "runner.appendSystemPrompt", r.append_system_prompt
        ),
        coalesce_queued_messages=chk.boolean(
            run,
            "coalesceQueuedMessages",
            "runner.coalesceQueuedMessages",
            r.coalesce_queued_messages,
        ),
        warm_sessions=chk.boolean(run, "warmSessions", "runner.warmSessions", r.warm_sessions),
        busy_policy=cast(
            BusyPolicy,
            chk.choice(
                run,
                "busyPolicy",
                "runner.busyPolicy",
                # coalesceQueuedMessages: true is the old spelling of busyPolicy "coalesce"
                "coalesce" if run.get("coalesceQueuedMessages") is True else r.busy_policy,
                ("queue", "steer", "coalesce"),
            ),
        ),
    )
    settings = replace(settings, coalesce_queued_messages=settings.busy_policy == "coalesce")
    if settings.idle_timeout_seconds > settings.hard_timeout_seconds:
        origin = (
            "runner.hardTimeoutSeconds"
            if run.get("hardTimeoutSeconds") is not None
            else "derived from timeouts.discord/timeouts.default"
            if hard_default != r.hard_timeout_seconds
            else "the default"
        )
        chk.warnings.append(
            f"runner.idleTimeoutSeconds ({_fmt_num(settings.idle_timeout_seconds)}) exceeds the "
            f"hard timeout ({_fmt_num(settings.hard_timeout_seconds)} s, {origin}): every run "
            "is cut at the hard timeout; set runner.hardTimeoutSeconds to raise it"
        )
    return settings


def _limits(chk: _Checker, data: Mapping[str, Any]) -> LimitSettings:
    lim = chk.section(data, "limits")
    chk.unknown_keys(lim, "limits", _LIMIT_KEYS, frozenset())
    d = LimitSettings()
    limits = LimitSettings(
        max_concurrent_runs=chk.integer(
            lim,
            "maxConcurrentRuns",
            "limits.maxConcurrentRuns",
            d.max_concurrent_runs,
            low=1,
            high=64,
        ),
        max_workers=chk.integer(
            lim, "maxWorkers", "limits.maxWorkers", d.max_workers, low=1, high=1024
        ),
        worker_idle_seconds=chk.number(
            lim,
            "workerIdleSeconds",
            "limits.workerIdleSeconds",
            d.worker_idle_seconds,
            low=0,
            high=7 * _DAY,
            unit=" seconds",
        ),
        shutdown_grace_seconds=chk.number(
            lim,
            "shutdownGraceSeconds",
            "limits.shutdownGraceSeconds",
            d.shutdown_grace_seconds,
            low=0,
            high=3600,
            unit=" seconds",
        ),
        worker_start_method=cast(
            WorkerStartMethod,
            chk.choice(
                lim,
                "workerStartMethod",
                "limits.workerStartMethod",
                d.worker_start_method,
                ("forkserver", "exec"),
            ),
        ),
        worker_nice=chk.integer(
            lim, "workerNice", "limits.workerNice", d.worker_nice, low=0, high=19
        ),
        warm_idle_seconds=chk.number(
            lim,
            "warmIdleSeconds",
            "limits.warmIdleSeconds",
            d.warm_idle_seconds,
            low=0,
            high=7 * _DAY,
            unit=" seconds",
        ),
        max_warm_sessions=chk.integer(
            lim, "maxWarmSessions", "limits.maxWarmSessions", d.max_warm_sessions, low=0, high=1024
        ),
    )
    if limits.max_workers < limits.max_concurrent_runs:
        chk.warnings.append(
            f"limits.maxWorkers ({limits.max_workers}) is below limits.maxConcurrentRuns "
            f"({limits.max_concurrent_runs}): at most {limits.max_workers} runs at once"
        )
    return limits


# ---- public API ------------------------------------------------------------------------


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def parse_settings(
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> Settings:
    """Validate an already-parsed settings document; raise ConfigError listing every error.

    ``source`` only labels messages and ``Settings.source``.
    """
    env = os.environ if environ is None else environ
    chk = _Checker()
    chk.unknown_keys(data, "", _TOP_OURS, _TOP_UPSTREAM_ONLY)
    model = chk.string(data, "model", "model", "")
    api = chk.string(data, "api", "api", "", secret=True)
    timezone = chk.string(data, "timezone", "timezone", "UTC")
    offset = _timezone_offset(chk, data, timezone)
    security = _security(chk, data)
    timeouts = _timeouts(chk, data)
    discord = _discord(chk, data, env)
    runner = _runner(chk, data, data.get("timeouts"))
    limits = _limits(chk, data)

    register_secret(discord.token)
    register_secret(api)
    secrets = tuple(s for s in (discord.token, api) if s)
    # Tokens pasted into the wrong key must not be echoed back either.
    raw_token = (
        data.get("discord", {}).get("token") if isinstance(data.get("discord"), dict) else None
    )
    if isinstance(raw_token, str) and raw_token.strip():
        secrets += (raw_token.strip(),)
    where = str(source) if source is not None else "settings"
    if chk.errors:
        count = len(chk.errors)
        head = f"{where}: {count} invalid setting{'s' if count != 1 else ''}:"
        raise ConfigError(_scrub("\n".join([head, *(f"  {e}" for e in chk.errors)]), secrets))
    return Settings(
        model=model,
        api=api,
        timezone=timezone,
        timezone_offset_minutes=offset,
        security=security,
        timeouts=MappingProxyType(timeouts),
        discord=discord,
        runner=runner,
        limits=limits,
        source=source,
        warnings=tuple(_scrub(w, secrets) for w in chk.warnings),
    )


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate ``path``. A missing file gives the defaults (``source=None``);
    the Discord token may still come from a credential or ``DISCORD_TOKEN``.

    Raises :class:`ConfigError` for unreadable files, JSON syntax errors (with line and
    column) and invalid values (every one of them, one per line).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return parse_settings({}, environ=environ, source=None)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot be read ({exc.strerror}); check its owner and mode (chmod 600 {path})"
        ) from exc
    duplicates: list[str] = []

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                duplicates.append(key)
            obj[key] = value
        return obj

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}:{exc.lineno}:{exc.colno}: invalid JSON at line {exc.lineno}, column "
            f"{exc.colno}: {exc.msg}. Fix: correct the syntax there (a trailing comma, a "
            "missing comma or an unquoted string are the usual causes)"
        ) from None
    dupes = sorted(set(duplicates))
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level is {_json_type(data)}; expected an object ({{...}}). "
            "Fix: wrap the settings in { }, or run `claudeclaw init --force` for a fresh file"
        )
    settings = parse_settings(data, environ=environ, source=path)
    if dupes:
        extra = tuple(f"{k}: key appears more than once; the last one wins" for k in dupes)
        settings = replace(settings, warnings=settings.warnings + extra)
    return settings


def starter_document(defaults: Settings | None = None) -> dict[str, Any]:
    """Every key claudeclaw reads, at its default value (what ``claudeclaw init`` writes).

    Three defaults depend on the machine or on another key and are written as ``null``
    ("use the default"): ``timezoneOffsetMinutes``, ``limits.maxConcurrentRuns`` and
    ``limits.maxWarmSessions``.
    """
    s = defaults or Settings(timeouts=MappingProxyType(dict(DEFAULT_TIMEOUTS_MINUTES)))

    def n(value: float) -> float | int:
        return int(value) if float(value).is_integer() else value

    d, r, lim = s.discord, s.runner, s.limits
    return {
        "model": s.model,
        "api": "",
        "timezone": s.timezone,
        # null: derived from "timezone" (a fixed 0 here would silently win over it).
        "timezoneOffsetMinutes": None,
        "security": {
            "level": s.security.level,
            "allowedTools": list(s.security.allowed_tools),
            "disallowedTools": list(s.security.disallowed_tools),
        },
        "timeouts": {k: n(v) for k, v in s.timeouts.items()},
        "discord": {
            "token": "",
            "allowedUserIds": [],
            "listenChannels": list(d.listen_channels),
            "listenGuilds": list(d.listen_guilds),
            "channelNames": dict(d.channel_names),
            "imageOutputRoots": list(d.image_output_roots),
            "sessionScope": d.session_scope,
            "removeSessionOnArchive": d.remove_session_on_archive,
            "progressAfterSeconds": n(d.progress_after_seconds),
            "progressEditIntervalSeconds": n(d.progress_edit_interval_seconds),
            "maxAttachmentBytes": d.max_attachment_bytes,
            "maxInlineTextChars": d.max_inline_text_chars,
            "inboxMaxAgeHours": n(d.inbox_max_age_hours),
        },
        "runner": {
            "claudePath": r.claude_path,
            "idleTimeoutSeconds": n(r.idle_timeout_seconds),
            "hardTimeoutSeconds": n(r.hard_timeout_seconds),
            "killGraceSeconds": n(r.kill_grace_seconds),
            "appendSystemPrompt": r.append_system_prompt,
            "coalesceQueuedMessages": r.coalesce_queued_messages,
            "warmSessions": r.warm_sessions,
            "busyPolicy": r.busy_policy,
        },
        "limits": {
            "maxConcurrentRuns": None,  # null: derived from this machine's memory, 4..64
            "maxWorkers": lim.max_workers,
            "workerIdleSeconds": n(lim.worker_idle_seconds),
            "shutdownGraceSeconds": n(lim.shutdown_grace_seconds),
            "workerStartMethod": lim.worker_start_method,
            "workerNice": lim.worker_nice,
            "warmIdleSeconds": n(lim.warm_idle_seconds),
            "maxWarmSessions": None,  # null: derived from this machine's memory, 1..64
        },
    }


def write_starter_settings(paths: ProjectPaths, *, force: bool = False) -> Path:
    """Create the private state dir (0700) and a starter ``settings.json`` (0600).

    The file lists every key at its default, with an empty token and an empty allowlist
    (the bot answers nobody until ``discord.allowedUserIds`` is filled in). An existing
    file is never overwritten unless ``force``.
    """
    target = paths.settings_file
    ensure_private_dir(paths.state_dir)
    if target.exists() and not force:
        raise ConfigError(
            f"{target} already exists; not overwriting it. Fix: edit it, or run "
            "`claudeclaw init --force` to replace it with the defaults"
        )
    write_private_text(target, json.dumps(starter_document(), indent=2) + "\n")
    return target
