"""structlog set-up: readable lines on a terminal, one JSON object per line otherwise.

Every event is a dotted fact in the past tense (``worker.spawned``) with fields; context
such as ``thread_id``/``session_id``/``run_id`` is bound with :func:`bind` and rides along.
Secrets registered with :func:`register_secret` are replaced by ``[redacted]`` wherever
they appear in an event, so a token pasted into an error message never reaches a log.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

LogMode = Literal["auto", "console", "json"]

_secrets: set[str] = set()
_SECRET_KEYS = frozenset({"token", "api", "api_key", "authorization", "password"})


def register_secret(value: str) -> None:
    """Never log ``value`` (tokens, API keys). Short strings are ignored to avoid noise."""
    if value and len(value) >= 8:
        _secrets.add(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, "[redacted]")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: drop secret-named keys, scrub registered secret values."""
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _add_pid(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def configure_logging(
    *, level: str = "info", mode: LogMode = "auto", process: str = "supervisor"
) -> None:
    """Configure structlog for this process (call once, early; workers call it too)."""
    if mode == "auto":
        mode = "console" if sys.stderr.isatty() else "json"
    renderer: Any
    if mode == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_pid,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(process=process)


def get_logger(**initial: Any) -> Any:
    """A bound logger; ``initial`` fields are attached to every event it logs."""
    return structlog.get_logger().bind(**initial)


def bind(**fields: Any) -> None:
    """Attach fields to every event logged from the current task/context."""
    structlog.contextvars.bind_contextvars(**fields)
