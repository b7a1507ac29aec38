"""``claudeclaw doctor``: check a project before (or while) running it, each with its fix.

Every check says what it found and, when something is wrong, the exact command or edit
that fixes it. Secrets are never printed: the token check names only where it came from.
Checks never block the event loop (``claude --version`` runs as an asyncio subprocess).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shlex
import shutil
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from claudeclaw.agent import (
    AGENT_HOME_ENV,
    AGENT_USER_ENV,
    ROOT_MODE,
    SHARED_DIRS,
    agent_account,
)
from claudeclaw.config import Settings, load_settings
from claudeclaw.control import read_daemon_info
from claudeclaw.errors import EXIT_FAILURE, EXIT_OK, ConfigError, StateError
from claudeclaw.jobfiles import load_jobs
from claudeclaw.jsonstore import backup_path
from claudeclaw.paths import PRIVATE_DIR_MODE, ProjectPaths
from claudeclaw.scheduler import jobs_directory
from claudeclaw.service import (
    API_KEY_CREDENTIAL,
    DISCORD_TOKEN_CREDENTIAL,
    ServiceLayout,
    read_credential,
    token_source_text,
)
from claudeclaw.workspace import repo_problem, worktrees_dir

CheckStatus = Literal["ok", "warn", "fail"]
VERSION_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Check:
    """One finding. ``fix`` is empty when there is nothing to do."""

    name: str
    status: CheckStatus
    detail: str
    fix: str = ""


def _euid() -> int:
    """The effective uid (a function so tests can pretend to be root)."""
    return os.geteuid()


def _check_settings(
    paths: ProjectPaths, env: Mapping[str, str]
) -> tuple[list[Check], Settings | None]:
    path = paths.settings_file
    try:
        settings = load_settings(path, env)
    except ConfigError as exc:
        if isinstance(exc.__cause__, PermissionError):
            raise exc.__cause__ from None
        return [
            Check(
                "settings",
                "fail",
                str(exc),
                f"edit {path} and fix the keys listed (or `claudeclaw init --force` "
                "to start again from the defaults)",
            )
        ], None
    checks: list[Check] = []
    if settings.source is None:
        checks.append(
            Check(
                "settings",
                "warn",
                f"no settings file ({path}); using the defaults",
                "run `claudeclaw init` to create one, then fill in discord.allowedUserIds",
            )
        )
    else:
        checks.append(Check("settings", "ok", f"{path} is valid"))
    if settings.warnings:
        checks.append(
            Check(
                "settings warnings",
                "warn",
                "\n".join(settings.warnings),
                f"edit {path}: remove or rename the keys named above",
            )
        )
    return checks, settings


def resolve_claude(claude_path: str, root: Path, env: Mapping[str, str]) -> Path | None:
    """Where ``runner.claudePath`` points: a path (relative to the project) or a PATH name."""
    if os.sep in claude_path:
        candidate = Path(claude_path).expanduser()
        if not candidate.is_absolute():
            candidate = root / candidate
        return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None
    found = shutil.which(claude_path, path=env.get("PATH", os.defpath))
    return Path(found) if found else None


async def _check_claude(
    settings: Settings | None, paths: ProjectPaths, env: Mapping[str, str]
) -> Check:
    claude_path = settings.runner.claude_path if settings else "claude"
    exe = await asyncio.to_thread(resolve_claude, claude_path, paths.root, env)
    usable = await asyncio.to_thread(lambda: paths.root.is_dir() and os.access(paths.root, os.X_OK))
    cwd = paths.root if usable else None  # another user's project: run it from here
    if exe is None:
        return Check(
            "claude",
            "fail",
            f"{claude_path!r} not found"
            + ("" if os.sep in claude_path else " on PATH")
            + " (or not executable)",
            "install Claude Code (https://docs.anthropic.com/en/docs/claude-code) and log in "
            "with `claude`, or set runner.claudePath to the full path of the executable",
        )
    try:
        proc = await asyncio.create_subprocess_exec(
            str(exe),
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in env.items() if k != "DISCORD_TOKEN"},
            cwd=cwd,
        )
    except OSError as exc:
        return Check(
            "claude",
            "fail",
            f"{exe} could not be started: {exc.strerror}",
            f"check that {exe} is a working executable (try `{exe} --version`)",
        )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), VERSION_TIMEOUT_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Check(
            "claude",
            "fail",
            f"`{exe} --version` did not answer within {VERSION_TIMEOUT_SECONDS:g} s",
            f"run `{exe} --version` by hand and fix what it waits for",
        )
    text = (out or err).decode("utf-8", "replace").strip()
    first = text.splitlines()[0] if text else ""
    if proc.returncode != 0:
        return Check(
            "claude",
            "fail",
            f"`{exe} --version` exited with {proc.returncode}: {first or '(no output)'}",
            f"run `{exe} --version` by hand and fix the error it shows",
        )
    return Check("claude", "ok", f"{exe}: {first or '(no version printed)'}")


@dataclass(frozen=True, slots=True)
class _View:
    """Whose files these are: the daemon's user (the installed unit's ``User=`` when the
    project is the installed service's, else whoever runs doctor) and its HOME; and who
    runs ``claude`` (``agent``, with ``agent_home``: where its login is), which in
    two-user mode is a second account."""

    owner_uid: int
    owner: str
    home: Path
    layout: ServiceLayout | None
    agent: str = ""
    agent_home: Path | None = None

    @property
    def two_users(self) -> bool:
        return bool(self.agent) and self.agent != self.owner

    @property
    def claude_user(self) -> str:
        return self.agent if self.two_users else self.owner

    @property
    def claude_home(self) -> Path:
        return self.agent_home if self.two_users and self.agent_home else self.home

    @property
    def sudo(self) -> str:
        """Prefix for a fix that changes the service's files."""
        return "sudo " if self.layout is not None else ""

    def rerun_hint(self) -> str:
        if self.layout is None:
            return f"run me as the project's owner ({self.owner})"
        command = f"claudeclaw doctor --project {self.layout.project}"
        return f"run me as `{self.layout.run_as(command)}`"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _agent(
    layout: ServiceLayout | None, env: Mapping[str, str], running: tuple[str, str]
) -> tuple[str, Path | None]:
    """Who runs claude in two-user mode and its HOME, or ("", None): the installed unit's
    Environment= says, else our environment (doctor inside the service), else the running
    daemon (daemon.json: doctor run by hand, e.g. for a claudeclaw@NAME project)."""
    if layout is not None:
        name, home = layout.agent_user, str(layout.agent_home or "")
    elif env.get(AGENT_USER_ENV, "").strip():
        name, home = env[AGENT_USER_ENV].strip(), env.get(AGENT_HOME_ENV, "").strip()
    else:
        name, home = running
    if not name:
        return "", None
    if home:
        return name, Path(home)
    try:
        return name, Path(pwd.getpwnam(name).pw_dir)
    except KeyError:  # the isolation check reports the missing user
        return name, None


def _view(
    paths: ProjectPaths,
    env: Mapping[str, str],
    service: ServiceLayout | None,
    running: tuple[str, str] = ("", ""),
) -> _View:
    layout = service if service is not None and service.project == paths.root else None
    agent, agent_home = _agent(layout, env, running)
    if layout is not None:
        try:
            uid = pwd.getpwnam(layout.user).pw_uid
        except KeyError:
            uid = -1
        return _View(uid, layout.user, layout.home, layout, agent, agent_home)
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    return _View(os.getuid(), _user_name(os.getuid()), home, None, agent, agent_home)


def _guarded(name: str, view: _View, check: Callable[[], list[Check]]) -> list[Check]:
    """Run one check; a file we may not read says whose view is needed; nothing crashes."""
    try:
        return check()
    except PermissionError as exc:
        where = exc.filename or "a file"
        return [
            Check(
                name,
                "fail",
                f"permission denied reading {where} (the daemon runs as {view.owner})",
                view.rerun_hint(),
            )
        ]
    except Exception as exc:  # doctor reports, it does not crash
        return [Check(name, "fail", f"could not check: {type(exc).__name__}: {exc}")]


def _check_state_dir(paths: ProjectPaths, view: _View) -> list[Check]:
    state = paths.state_dir
    try:
        info = state.lstat()
    except FileNotFoundError:
        return [
            Check(
                "state directory",
                "warn",
                f"{state} does not exist yet",
                "run `claudeclaw init` (it is created with mode 0700)",
            )
        ]
    if not stat.S_ISDIR(info.st_mode):
        return [Check("state directory", "fail", f"{state} is not a directory", f"remove {state}")]
    checks: list[Check] = []
    quoted = shlex.quote(str(state))
    if info.st_uid != view.owner_uid:
        whose = "the service's user" if view.layout is not None else "us"
        checks.append(
            Check(
                "state directory",
                "fail",
                f"{state} belongs to {_user_name(info.st_uid)}, not to {whose} ({view.owner}): "
                "the daemon cannot use it",
                f"{view.sudo}chown -R {view.owner}: {quoted}",
            )
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode not in (PRIVATE_DIR_MODE, _STATE_DIR_TWO_USERS):  # 0710: the agent passes through
        want = _STATE_DIR_TWO_USERS if view.two_users else PRIVATE_DIR_MODE
        checks.append(
            Check(
                "state directory",
                "fail",
                f"{state} has mode {mode:04o}; others can read sessions and settings",
                f"{view.sudo}chmod {want:o} {quoted}",
            )
        )
    elif not checks:
        checks.append(
            Check("state directory", "ok", f"{state} (mode {mode:04o}, owner {view.owner})")
        )

    files = [paths.settings_file, paths.global_session_file, paths.thread_sessions_file]
    files += [backup_path(f) for f in files]
    files += [paths.session_changes_file, paths.pending_file]
    present: list[tuple[Path, os.stat_result]] = []
    for f in files:
        try:
            present.append((f, f.lstat()))
        except FileNotFoundError:
            continue
    loose = [(f, stat.S_IMODE(i.st_mode)) for f, i in present if i.st_mode & 0o077]
    foreign = [(f, i.st_uid) for f, i in present if i.st_uid != view.owner_uid]
    if foreign:
        listed = ", ".join(f"{f.name} ({_user_name(uid)})" for f, uid in foreign)
        targets = " ".join(shlex.quote(str(f)) for f, _ in foreign)
        checks.append(
            Check(
                "state files",
                "fail",
                f"not owned by {view.owner}, so the daemon may not read or replace them: {listed}",
                f"{view.sudo}chown {view.owner}: {targets} && {view.sudo}chmod 600 {targets}",
            )
        )
    if loose:
        listed = ", ".join(f"{f.name} ({m:04o})" for f, m in loose)
        checks.append(
            Check(
                "state files",
                "fail",
                f"readable by others: {listed}",
                f"{view.sudo}chmod 600 " + " ".join(shlex.quote(str(f)) for f, _ in loose),
            )
        )
    if not foreign and not loose:
        checks.append(Check("state files", "ok", "settings and session files are private"))
    return checks


_STATE_DIR_TWO_USERS = dict(SHARED_DIRS)[Path(".claude/claudeclaw")]


def _check_shared_dirs(paths: ProjectPaths, view: _View) -> list[Check]:
    """Two-user mode: the directories the daemon opens to the agent (agent.py) are the
    daemon's and give the agent no more than agent.py does (blocking I/O).

    A mode that gives less is only a warning: the daemon sets the modes at every start."""
    if not view.two_users:
        return []
    wanted = [(paths.root, ROOT_MODE)] + [
        (paths.root / rel, mode) for rel, mode in SHARED_DIRS if rel != Path(".claude/claudeclaw")
    ]  # the state directory has its own check
    wrong: list[str] = []
    fixes: list[str] = []
    short: list[str] = []
    for path, want in wanted:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue  # the daemon makes it at its next start
        quoted = shlex.quote(str(path))
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            wrong.append(f"{path} is not a directory (the daemon will not start)")
            fixes.append(f"{view.sudo}rm {quoted} (the daemon makes it again)")
        elif info.st_uid != view.owner_uid:
            wrong.append(
                f"{path} belongs to {_user_name(info.st_uid)}, not to {view.owner} "
                "(the daemon will not start)"
            )
            fixes.append(f"{view.sudo}chown {view.owner}: {quoted}")
        elif mode & ~want:
            wrong.append(
                f"{path} has mode {mode:04o}: more than {want:04o}, which is all "
                f"{view.agent} (the group) needs"
            )
            fixes.append(f"{view.sudo}chmod {want:04o} {quoted}")
        elif mode != want:
            short.append(f"{path} ({mode:04o}, wants {want:04o})")
    if wrong:
        return [Check("shared directories", "fail", "\n".join(wrong), " && ".join(fixes))]
    if short:
        restart = "restart the service" if view.layout is not None else "restart the daemon"
        return [
            Check(
                "shared directories",
                "warn",
                f"{view.agent} cannot reach what it needs until the daemon's next start "
                "sets the modes: " + ", ".join(short),
                restart,
            )
        ]
    return [
        Check(
            "shared directories",
            "ok",
            f"two users: the project and the directories shared with {view.agent} have "
            "the modes the daemon sets",
        )
    ]


def _credential_file(view: _View, env: Mapping[str, str], name: str) -> Path | None:
    """The host file the installed unit loads credential ``name`` from, when doctor runs
    outside the service (inside it, ``$CREDENTIALS_DIRECTORY`` is what counts)."""
    if view.layout is None or env.get("CREDENTIALS_DIRECTORY"):
        return None
    return view.layout.credentials.get(name)


_EMPTY = "is empty"


def _check_secret_file(name: str, path: Path, what: str) -> Check | None:
    """A credential file the unit loads: it must exist (else the unit fails) and be private.
    Returns None when it is there, private and not empty (its content is never read)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return Check(
            name,
            "fail",
            f"{path} does not exist: the unit then fails with status=243/CREDENTIALS",
            f"sudo install -m 0600 -o root -g root /dev/null {path}, then write {what} into it",
        )
    if info.st_mode & 0o077:
        return Check(
            name,
            "fail",
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}: other users can read it",
            f"sudo chmod 600 {path}",
        )
    if info.st_size == 0:
        return Check(name, "fail", f"{path} {_EMPTY}")
    return None


def _check_token(settings: Settings, view: _View, env: Mapping[str, str]) -> Check:
    d = settings.discord
    cred_file = _credential_file(view, env, DISCORD_TOKEN_CREDENTIAL)
    if cred_file is not None:
        problem = _check_secret_file("discord token", cred_file, "the bot token")
        if problem is None:
            return Check(
                "discord token",
                "ok",
                f"set (in {cred_file}, the service's credential {DISCORD_TOKEN_CREDENTIAL}; "
                "not shown)",
            )
        if not problem.detail.endswith(_EMPTY):
            return problem
        if d.token:
            where = token_source_text(d.token_source)
            return Check("discord token", "ok", f"set (from {where}; {cred_file} is empty)")
        return Check(
            "discord token",
            "fail",
            f"no Discord bot token: {cred_file} is empty, so the service serves the local "
            "control socket only",
            f"sudo sh -c 'cat > {cred_file}' (paste the token, then Ctrl-D), then "
            "sudo systemctl restart claudeclaw",
        )
    if not d.token:
        return Check(
            "discord token",
            "fail",
            "no Discord bot token",
            "set DISCORD_TOKEN in the environment, or LoadCredential=discord-token:<file> in "
            "the systemd unit, or discord.token in settings.json",
        )
    where = token_source_text(d.token_source)
    return Check("discord token", "ok", f"set (from {where}; not shown)")


_CONSOLE_KEY_PREFIX = "sk-ant-api"


def _login_fix(view: _View, root: Path) -> str:
    """How to log claude in as the user it runs as, in the HOME it runs with (the agent's,
    in its own HOME, in two-user mode: README, Setup step 5)."""
    if view.layout is None and not view.two_users:
        return (
            f"cd {shlex.quote(str(root))} && claude, type /login and follow it; "
            "or set ANTHROPIC_API_KEY"
        )
    key_file = view.layout.credentials.get(API_KEY_CREDENTIAL) if view.layout else None
    key = f"put an Anthropic Console API key in {key_file}" if key_file else "use an API key"
    home = shlex.quote(str(view.claude_home))
    where = home if view.two_users else shlex.quote(str(root))
    return (
        f"cd {where} && sudo -u {view.claude_user} env HOME={home} claude, "
        f"type /login and follow it (README, Setup step 5); or {key} and restart the service"
    )


def _login_file(creds: Path, view: _View) -> tuple[str, Check | None]:
    """What the CLI's login file says, offline: a finding for the "ok" line (or ""), and a
    problem. In two-user mode the file is the agent's (0600): the daemon's user may not
    read it, and that it exists is then all we can know. Its contents are never shown."""
    try:
        data: object = json.loads(creds.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "", None
    except PermissionError:
        info = creds.stat()  # its directory unreadable too: _guarded says who may look
        if info.st_size == 0:  # no login in it: "not logged in" says the rest
            return "", None
        return (
            f"logged in ({creds}; only {_user_name(info.st_uid)} may read it, so whether "
            "the login is complete was not checked)",
            None,
        )
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "", Check("claude login", "warn", f"{creds} is not valid JSON")
    oauth = data.get("claudeAiOauth") if isinstance(data, dict) else None
    if isinstance(oauth, dict) and (oauth.get("accessToken") or oauth.get("refreshToken")):
        return f"logged in ({creds})", None
    return "", None


def _check_claude_login(
    settings: Settings | None, paths: ProjectPaths, view: _View, env: Mapping[str, str]
) -> list[Check]:
    """Offline: is there a login (``~/.claude/.credentials.json``) or an API key for the
    user claude runs as (the agent, in its HOME, in two-user mode)? Nothing is sent
    anywhere; whether the login has expired is not known."""
    found: list[str] = []
    checks: list[Check] = []
    key_file = _credential_file(view, env, API_KEY_CREDENTIAL)
    if key_file is not None and key_file.exists():  # optional (SetCredential= default)
        problem = _check_secret_file("claude login", key_file, "the API key")
        if problem is None:
            found.append(f"an API key in {key_file} (given to claude as ANTHROPIC_API_KEY)")
        elif not problem.detail.endswith(_EMPTY):
            checks.append(problem)
    elif read_credential(API_KEY_CREDENTIAL, env):
        found.append(f"an API key (the credential {API_KEY_CREDENTIAL}, as ANTHROPIC_API_KEY)")
    if view.layout is None and env.get("ANTHROPIC_API_KEY"):
        found.append("ANTHROPIC_API_KEY in the environment")
    if settings is not None and settings.api:
        found.append("settings.api (sent as ANTHROPIC_AUTH_TOKEN, a Bearer token)")
        if settings.api.startswith(_CONSOLE_KEY_PREFIX):
            checks.append(
                Check(
                    "claude api key",
                    "warn",
                    "settings.api holds an Anthropic Console API key, but it is sent as "
                    "ANTHROPIC_AUTH_TOKEN (a Bearer token, for gateways); Console keys "
                    "belong in ANTHROPIC_API_KEY",
                    "put the key in the anthropic-api-key credential (or ANTHROPIC_API_KEY) "
                    "and clear settings.api",
                )
            )
    config_dir = view.claude_home / ".claude"
    # the agent's environment drops CLAUDE_CONFIG_DIR (agent.agent_env)
    if view.layout is None and not view.two_users and env.get("CLAUDE_CONFIG_DIR"):
        config_dir = Path(env["CLAUDE_CONFIG_DIR"])
    creds = config_dir / ".credentials.json"
    login, problem = _login_file(creds, view)
    if login:
        found.append(login)
    if problem is not None:
        checks.append(problem)
    if found:
        checks.insert(0, Check("claude login", "ok", "; ".join(found)))
    elif not any(c.name == "claude login" and c.status == "fail" for c in checks):
        checks.insert(
            0,
            Check(
                "claude login",
                "fail",
                f"claude is not logged in for {view.claude_user}: no {creds} and no API key "
                '(every run would fail with "Not logged in")',
                _login_fix(view, paths.root),
            ),
        )
    return checks


def _check_allowlist(settings: Settings) -> Check:
    d = settings.discord
    fix = 'put your Discord user id in discord.allowedUserIds, e.g. ["123456789012345678"]'
    if d.allow_everyone:
        return Check(
            "allowlist",
            "warn",
            'discord.allowedUserIds is "*": open to everyone who can message the bot, '
            f"with security level {settings.security.level!r}",
            'list the user ids that may use the bot instead of "*"',
        )
    if not d.allowed_user_ids:
        return Check(
            "allowlist", "warn", "discord.allowedUserIds is empty: the bot will answer nobody", fix
        )
    count = len(d.allowed_user_ids)
    return Check("allowlist", "ok", f"{count} allowed user{'s' if count != 1 else ''}")


def _check_root(settings: Settings | None, env: Mapping[str, str], view: _View) -> Check:
    euid = _euid()
    if view.layout is not None:
        if view.owner_uid < 0:
            return Check(
                "user",
                "fail",
                f"the service's user {view.owner} ({view.layout.unit_file}) does not exist",
                "reinstall the package (it creates the user), or fix User= in the unit",
            )
        if view.owner_uid == 0:
            return Check(
                "user",
                "fail",
                f"{view.layout.unit_file} runs claudeclaw as root: claude refuses "
                "--dangerously-skip-permissions as root",
                "set User= to an unprivileged user in a drop-in (systemctl edit claudeclaw)",
            )
        if euid == view.owner_uid:
            return Check("user", "ok", f"running as the service's user {view.owner}")
        if euid == 0:
            return Check(
                "user",
                "ok",
                f"checking as root; the service runs as {view.owner} (files are checked "
                "against that user)",
            )
        return Check(
            "user",
            "warn",
            f"you are {_user_name(euid)}, the service runs as {view.owner}: what only "
            f"{view.owner} may read cannot be checked",
            view.rerun_hint(),
        )
    if euid != 0:
        return Check("user", "ok", "not running as root")
    level = settings.security.level if settings else "moderate"
    if env.get("IS_SANDBOX") == "1":
        return Check("user", "ok", "running as root with IS_SANDBOX=1 (a sandbox)")
    return Check(
        "user",
        "fail",
        f"running as root: claude refuses --dangerously-skip-permissions as root, and every "
        f"security level (here {level!r}) passes it",
        "run claudeclaw as a dedicated unprivileged user (e.g. `useradd -m claudeclaw`; "
        "User=claudeclaw in the systemd unit); only inside a throw-away sandbox set IS_SANDBOX=1",
    )


def _check_upstream_keys(settings: Settings) -> Check | None:
    """The original's keys that are set but do nothing here (a migrating user's list)."""
    if not settings.inert_keys:
        return None
    return Check(
        "original's keys",
        "warn",
        "\n".join(settings.inert_keys),
        f"remove these keys from {settings.source or 'settings.json'} (they are ignored)",
    )


def _check_jobs(paths: ProjectPaths, settings: Settings) -> Check:
    """Every job file parses (blocking file I/O: run it in a thread)."""
    directory = jobs_directory(paths, settings)
    jobs, errors = load_jobs(directory)
    problems = [f"{e.path.name}: {e.message}" for e in errors]
    problems += [f"{job.path.name}: {w}" for job in jobs for w in job.warnings]
    if problems:
        return Check(
            "jobs",
            "warn",
            f"{len(jobs)} usable, {len(errors)} skipped in {directory}:\n" + "\n".join(problems),
            "fix the files named above; the daemon re-reads them by itself",
        )
    if not jobs:
        return Check("jobs", "ok", f"no job files in {directory}")
    return Check("jobs", "ok", f"{len(jobs)} job file{'s' if len(jobs) != 1 else ''} valid")


async def _check_workspace(paths: ProjectPaths, settings: Settings) -> Check | None:
    """``threads.workspace: "worktree"`` needs a git repository with a commit."""
    if settings.threads.workspace != "worktree":
        return None
    problem = await repo_problem(paths.root)
    if problem:
        return Check(
            "thread workspaces",
            "fail",
            problem,
            f"`git init && git add -A && git commit` in {paths.root}, or set "
            'threads.workspace to "shared"',
        )
    return Check(
        "thread workspaces", "ok", f"each thread gets a git worktree under {worktrees_dir(paths)}"
    )


def _running_agent(paths: ProjectPaths) -> tuple[str, str]:
    """The agent user and HOME of the daemon running this project (daemon.json), or
    ("", "") (blocking)."""
    try:
        info = read_daemon_info(paths)
    except (StateError, ValueError):  # another user's daemon, or a garbled file
        return "", ""
    if info is None:
        return "", ""
    user, home = info.get("agent_user"), info.get("agent_home")
    return (user if isinstance(user, str) else "", home if isinstance(home, str) else "")


def _check_isolation(
    settings: Settings | None, env: Mapping[str, str], running_agent: str = ""
) -> Check:
    """Who runs claude, and so what its tools can reach (README "Safe by default").

    doctor run by hand lacks the unit's environment: the running daemon's choice (from
    daemon.json) counts then."""
    if not env.get(AGENT_USER_ENV) and running_agent:
        env = {**env, AGENT_USER_ENV: running_agent}
    try:
        account = agent_account(env)
    except StateError as exc:
        return Check("isolation", "fail", str(exc), f"unset {AGENT_USER_ENV}, or create the user")
    if account is not None:
        return Check(
            "isolation",
            "ok",
            f"two users: claude runs as {account.name} (uid {account.uid}), without "
            "capabilities: its tools cannot write .claude/claudeclaw/, read the daemon's "
            "credentials or environment, or signal it",
        )
    level = settings.security.level if settings else "moderate"
    two_users = (
        "run the packaged service (two users, docs/OPERATIONS.md), or set security.level "
        'to "strict" (no Bash)'
    )
    reach = (
        "the daemon's settings (allowlist, security level: used from the next reload or "
        "restart), its sessions, a Discord token in settings.json, DISCORD_TOKEN's file or "
        "the systemd credential, and it can signal the daemon"
    )
    if level == "unrestricted":
        return Check(
            "isolation",
            "warn",
            f"one user (uid {os.getuid()}) and security level 'unrestricted': claude and its "
            f"tools can do all this user can, including changing {reach}",
            two_users,
        )
    if level == "moderate":
        return Check(
            "isolation",
            "warn",
            f"one user (uid {os.getuid()}): claude's Bash tool runs as you and can reach "
            f"{reach}. The CLI's deny rules keep only its file tools (Write, Edit, Read) out "
            "of .claude/claudeclaw/ and the CLI's settings",
            two_users,
        )
    return Check(
        "isolation",
        "ok",
        f"one user (uid {os.getuid()}), security level {level!r}: no Bash; the CLI's deny "
        "rules keep Claude's file tools out of .claude/claudeclaw/ and the CLI's settings "
        "(enforced by the CLI, not the OS)",
    )


async def run_checks(
    paths: ProjectPaths,
    environ: Mapping[str, str] | None = None,
    *,
    service: ServiceLayout | None = None,
) -> list[Check]:
    """All checks, in the order a user should fix them. ``service``: the installed unit's
    layout; when it serves ``paths``, files are checked against its user and credentials."""
    env = os.environ if environ is None else environ
    running = await asyncio.to_thread(_running_agent, paths)
    view = _view(paths, env, service, running)
    # File reads go to a thread: doctor may run inside a live daemon's loop.
    loaded: list[Settings | None] = [None]

    def settings_checks() -> list[Check]:
        checks, loaded[0] = _check_settings(paths, env)
        return checks

    checks = await asyncio.to_thread(_guarded, "settings", view, settings_checks)
    settings = loaded[0]
    checks.append(await _check_claude(settings, paths, env))

    def login() -> list[Check]:
        return _check_claude_login(settings, paths, view, env)

    def state() -> list[Check]:
        return _check_state_dir(paths, view)

    checks.extend(await asyncio.to_thread(_guarded, "claude login", view, login))
    checks.extend(await asyncio.to_thread(_guarded, "state directory", view, state))

    def shared() -> list[Check]:
        return _check_shared_dirs(paths, view)

    checks.extend(await asyncio.to_thread(_guarded, "shared directories", view, shared))
    if settings is not None:
        valid = settings

        def token() -> list[Check]:
            return [_check_token(valid, view, env)]

        checks.extend(await asyncio.to_thread(_guarded, "discord token", view, token))
        checks.append(_check_allowlist(settings))
        checks.append(await asyncio.to_thread(_check_jobs, paths, settings))
        inert = _check_upstream_keys(settings)
        if inert is not None:
            checks.append(inert)
        workspace = await _check_workspace(paths, settings)
        if workspace is not None:
            checks.append(workspace)
    checks.append(_check_root(settings, env, view))
    checks.append(_check_isolation(settings, env, view.agent or running[0]))
    return checks


_LABEL = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def format_checks(checks: Sequence[Check]) -> str:
    """One line per check; multi-line details and the fix are indented below it."""
    lines: list[str] = []
    for check in checks:
        first, *rest = check.detail.splitlines() or [""]
        lines.append(f"[{_LABEL[check.status]}] {check.name}: {first}")
        lines.extend(f"         {line}" for line in rest)
        if check.status != "ok" and check.fix:
            lines.append(f"         fix: {check.fix}")
    return "\n".join(lines)


def exit_code(checks: Sequence[Check]) -> int:
    """Non-zero when any check failed (warnings alone pass)."""
    return EXIT_FAILURE if any(c.status == "fail" for c in checks) else EXIT_OK
