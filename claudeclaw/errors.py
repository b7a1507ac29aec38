"""Exception types and process exit codes shared by every part of claudeclaw."""

from __future__ import annotations


class ClaudeclawError(Exception):
    """Base class: an error a user can act on. ``str(err)`` names the problem and the fix."""


class ConfigError(ClaudeclawError):
    """settings.json (or the environment) is invalid; the message names key, value and fix."""


class DiscordLoginRejected(ConfigError):
    """Discord refused the bot token (or a privileged intent): restarting cannot help."""


class StateError(ClaudeclawError):
    """A state file under .claude/claudeclaw/ could not be read or written safely."""


class InvalidKeyError(ClaudeclawError, ValueError):
    """A session key (thread id) is not what it must be: digits only, or ``global``."""


class WorkspaceError(ClaudeclawError):
    """A thread's git worktree could not be created, inspected or removed safely."""


class IpcError(ClaudeclawError):
    """A frame on a Unix socket was malformed, oversized or of an unknown protocol version."""


class DaemonNotRunning(ClaudeclawError):
    """The control socket is absent or refuses connections."""


# Exit codes of the ``claudeclaw`` command and of worker processes.
EXIT_OK = 0
EXIT_FAILURE = 1  # a run failed, or a command could not do what was asked
EXIT_USAGE = 2  # argparse's own code for bad arguments
EXIT_CONFIG = 3  # settings are invalid: fix settings.json
EXIT_NOT_RUNNING = 4  # the daemon is not running (status/send/reload)
EXIT_LOGIN_FAILED = 5  # Discord rejected the token: do not restart in a loop
EXIT_WORKER_BOOT_FAILED = 10  # a worker could not connect back to its supervisor
