"""The installed systemd service, seen from outside it and from inside it.

Outside (``doctor``, ``status``, ``send``): which project the installed unit serves, as
which user, with which credential files, read from the unit file and its drop-ins, so a
command run from anywhere finds the service and checks files against the right owner.
Inside (the daemon): reading a systemd credential (``$CREDENTIALS_DIRECTORY/<name>``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from claudeclaw.agent import AGENT_HOME_ENV, AGENT_USER_ENV

UNIT = "claudeclaw.service"
# Searched in systemd's order: an admin's copy in /etc wins over the packaged one.
UNIT_DIRS: tuple[Path, ...] = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
)
DISCORD_TOKEN_CREDENTIAL = "discord-token"  # noqa: S105 - a name, not a secret
API_KEY_CREDENTIAL = "anthropic-api-key"
PROJECT_ENV = "CLAUDECLAW_PROJECT"


@dataclass(frozen=True, slots=True)
class ServiceLayout:
    """What the installed unit says: its user, project, HOME and credential files, and
    the agent ``claude`` runs as in two-user mode ("" when it runs as ``user``)."""

    unit_file: Path
    user: str
    project: Path
    home: Path
    credentials: Mapping[str, Path] = field(default_factory=dict)  # name -> file on the host
    agent_user: str = ""
    agent_home: Path | None = None  # None: the agent account's own home

    def run_as(self, command: str) -> str:
        """``command`` as the service's user would type it (``sudo -u claudeclaw …``)."""
        return f"sudo -u {self.user} {command}"


def _assignments(text: str) -> list[tuple[str, str]]:
    """``Key=value`` lines of the ``[Service]`` section (continuation lines joined)."""
    out: list[tuple[str, str]] = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def parse_unit(texts: Sequence[str], unit_file: Path) -> ServiceLayout | None:
    """The layout from a unit file's text followed by its drop-ins' (later ones win)."""
    user = ""
    workdir = ""
    project = ""
    env: dict[str, str] = {}
    credentials: dict[str, Path] = {}
    for text in texts:
        for key, value in _assignments(text):
            if key == "User":
                user = value
            elif key == "WorkingDirectory":
                workdir = value.lstrip("-")
            elif key == "ExecStart" and value:
                try:
                    words = shlex.split(value.lstrip("@-:+!"))
                except ValueError:
                    continue
                if "--project" in words[:-1]:
                    project = words[words.index("--project") + 1]
            elif key == "Environment":
                try:
                    words = shlex.split(value)
                except ValueError:
                    continue
                for word in words:
                    name, eq, text = word.partition("=")
                    if eq:
                        env[name] = text
            elif key == "LoadCredential":
                if not value:
                    credentials.clear()
                elif ":" in value:
                    name, _, path = value.partition(":")
                    credentials[name] = Path(path)
    root = project or workdir
    if not root or not root.startswith("/"):
        return None
    return ServiceLayout(
        unit_file=unit_file,
        user=user or "root",
        project=Path(root),
        home=Path(env.get("HOME", root)),
        credentials=credentials,
        agent_user=env.get(AGENT_USER_ENV, "").strip(),
        agent_home=Path(env[AGENT_HOME_ENV]) if env.get(AGENT_HOME_ENV, "").strip() else None,
    )


def find_service(unit_dirs: Sequence[Path] | None = None, unit: str = UNIT) -> ServiceLayout | None:
    """The installed system unit's layout, or None (not installed, or unreadable)."""
    dirs = UNIT_DIRS if unit_dirs is None else tuple(unit_dirs)
    for directory in dirs:
        unit_file = directory / unit
        try:
            texts = [unit_file.read_text(encoding="utf-8")]
        except (OSError, UnicodeDecodeError):
            continue
        dropins: list[Path] = []
        for d in dirs:
            try:
                dropins += sorted((d / f"{unit}.d").glob("*.conf"))
            except OSError:
                continue
        for dropin in sorted(dropins, key=lambda p: p.name):
            try:
                texts.append(dropin.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
        return parse_unit(texts, unit_file)
    return None


def read_credential(name: str, environ: Mapping[str, str] | None = None) -> str:
    """A systemd credential's text (stripped), or "" when there is none or it is empty."""
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        return ""
    try:
        return (Path(directory) / name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def token_source_text(source: str, layout: ServiceLayout | None = None) -> str:
    """Where the Discord token came from, in words a user can act on."""
    if source == "credential":
        where = ""
        if layout is not None and DISCORD_TOKEN_CREDENTIAL in layout.credentials:
            where = f", file {layout.credentials[DISCORD_TOKEN_CREDENTIAL]}"
        return f"the systemd credential {DISCORD_TOKEN_CREDENTIAL}{where}"
    if source == "env":
        return "the DISCORD_TOKEN environment variable"
    if source == "settings":
        return "discord.token in settings.json"
    return "nowhere"
