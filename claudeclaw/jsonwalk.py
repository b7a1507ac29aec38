"""Every string in a JSON-like document through one function: the walk that scrubbing
(logs, outbound Discord payloads) and mending lone surrogates (``surrogates.py``) share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def map_strings(value: Any, fn: Callable[[str], str], *, keys: bool = False) -> Any:
    """``value`` with ``fn`` applied to every string in it (dict keys too if ``keys``);
    lists and tuples keep their type, other values are returned as they are."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {
            (fn(key) if keys and isinstance(key, str) else key): map_strings(item, fn, keys=keys)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(map_strings(item, fn, keys=keys) for item in value)
    return value
