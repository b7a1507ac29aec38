"""The supervisor's loaded :class:`~claudeclaw.config.Settings`, as a JSON object for IPC.

Workers never read ``settings.json``: the supervisor's settings are the one truth, sent in
the ``configure`` frame at boot and in every ``reload`` frame. An invalid file on disk
therefore cannot stop a worker from starting, and an edit without ``reload`` cannot put
old and new workers on different settings.

The conversion follows the dataclasses' type hints, so a settings key added to
``config.py`` travels without changes here. The Discord token is left out: a worker has
no use for it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from claudeclaw.config import Settings
from claudeclaw.errors import IpcError


def settings_to_wire(settings: Settings) -> dict[str, Any]:
    """``settings`` as JSON-ready data, without the Discord token."""
    discord = dataclasses.replace(settings.discord, token="")
    data = _encode(dataclasses.replace(settings, discord=discord))
    assert isinstance(data, dict)
    return data


def settings_from_wire(data: Any) -> Settings:
    """The :class:`Settings` a ``settings_to_wire`` object describes (IpcError if it is not
    one)."""
    try:
        value = _decode(Settings, data)
    except (TypeError, ValueError, KeyError) as exc:
        raise IpcError(f"the settings in the frame are not valid: {exc}") from None
    assert isinstance(value, Settings)
    return value


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} in the settings")


def prepare() -> None:
    """Resolve the type hints of every settings dataclass now. The fork server calls it
    before forking: each worker decodes the settings once, and resolving the hints (string
    annotations, evaluated) was ~90 % of the ~0.5 ms that took."""
    todo: list[Any] = [Settings]
    while todo:
        hint = todo.pop()
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            todo += _fields(hint)[0].values()
        todo += typing.get_args(hint)


@functools.cache
def _fields(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A dataclass's resolved type hints and the names its constructor takes."""
    hints = typing.get_type_hints(cls)
    return hints, frozenset(f.name for f in dataclasses.fields(cls) if f.init)


def _decode(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise TypeError(f"{hint.__name__}: expected an object")
        hints, known = _fields(hint)
        return hint(**{k: _decode(hints[k], v) for k, v in value.items() if k in known})
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _decode(options[0], value)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_decode(item, v) for v in value)
    if origin in (Mapping, dict, typing.Mapping) or hint is Mapping:
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return types.MappingProxyType({str(k): _decode(item, v) for k, v in value.items()})
    if hint is Path:
        return Path(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
