"""Erase a secret from this process's initial environment block.

``/proc/<pid>/environ`` shows the environment a process was *started* with, whatever it did
with ``os.environ`` since: a ``DISCORD_TOKEN`` given to ``claudeclaw run`` stays readable
there by every process of the same user (``claude``'s Bash tool included, in single-user
mode). Python keeps its own copy in ``os.environ``, so the original bytes can be
overwritten in place, through libc's ``environ`` array, which points into that block.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable

__all__ = ["erase_initial_environ"]


def erase_initial_environ(names: Iterable[str]) -> list[str]:
    """Overwrite the values of ``names`` in the initial environment block with ``*``.

    ``os.environ`` keeps the real values. Returns the names that were erased. Never
    raises: without a libc ``environ`` (not Linux/glibc) there is nothing to erase.
    """
    wanted = {name.encode() + b"=" for name in names}
    erased: list[str] = []
    try:
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(ctypes.CDLL(None), "environ")
    except (OSError, ValueError, AttributeError):  # pragma: no cover - not glibc
        return erased
    index = 0
    while (address := environ[index]) is not None:
        entry = ctypes.string_at(address)
        prefix = entry[: entry.find(b"=") + 1]
        if prefix in wanted and len(entry) > len(prefix):
            ctypes.memset(address + len(prefix), ord("*"), len(entry) - len(prefix))
            erased.append(prefix[:-1].decode())
        index += 1
    return erased
