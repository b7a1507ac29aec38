"""Two users under a real systemd: what Claude's tools cannot reach, and what still works.

The .deb in a throw-away container (tests/systemd/sdct.sh) with systemd 252 as PID 1, the
real pinned CLI bound in read-only, talking to tests/fake_anthropic.py on the host's
loopback (the container shares the host's network). Every prompt makes the fake ask for
one tool call (``TOOL:<Name>:<json>``); the CLI runs it as claudeclaw-agent, and the fake's
answer carries the tool's output back, which ``claudeclaw send`` prints. A secret (the
canary) sits in the daemon's environment and in a systemd credential of the unit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fake_anthropic import FakeAnthropic
from tests.fixtures_claude import real_claude_path  # noqa: F401 - fixture
from tests.fixtures_systemd import (  # noqa: F401 - fixtures
    PROJECT,
    SETTINGS,
    UNIT,
    Container,
    boot_container,
    claudeclaw_deb,
    stop_container,
)

pytestmark = [pytest.mark.systemd, pytest.mark.realcli, pytest.mark.timeout(600)]

CLI_IN_CT = "/opt/claude-cli"
AGENT = "claudeclaw-agent"
AGENT_HOME = "/var/lib/claudeclaw-agent"
STATE = f"{PROJECT}/.claude/claudeclaw"
OUTBOX = f"{STATE}/outbox/discord"
CANARY = "canary-" + uuid.uuid4().hex
CANARY_ENV = "EXAMPLE_SERVICE_TOKEN"  # credential-named: never passed to workers or claude
CREDENTIAL = f"/run/credentials/{UNIT}/canary"
ALLOWLIST = ["111111111111111111"]
EVIL = json.dumps({"security": {"level": "unrestricted"}, "discord": {"allowedUserIds": "*"}})
DROPIN = f"/etc/systemd/system/{UNIT}.d/20-isolation-test.conf"


@dataclass
class Iso:
    ct: Container
    api: FakeAnthropic

    def send(self, prompt: str) -> str:
        """One message through the running daemon (as the service user); its reply."""
        proc = self.ct.run(
            "runuser", "-u", "claudeclaw", "--", "env", f"HOME={PROJECT}",
            "claudeclaw", "send", "--project", PROJECT, "-q", "-",
            input=prompt, check=False, timeout=120,
        )  # fmt: skip
        return proc.stdout + proc.stderr

    def tool(self, name: str, tool_input: dict[str, Any]) -> str:
        return self.send(f"TOOL:{name}:{json.dumps(tool_input)}")

    def main_pid(self) -> int:
        return int(self.ct.show("MainPID")["MainPID"])

    def settings_bytes(self) -> bytes:
        return (self.ct.root / SETTINGS.lstrip("/")).read_bytes()

    def as_daemon(self, code: str) -> str:
        """Python run as the daemon's user with the unit's agent variable (what /context
        and the uploader do), against the installed package."""
        script = "import sys; sys.path.insert(0, '/opt/claudeclaw/lib')\n" + code
        return self.ct.run(
            "runuser", "-u", "claudeclaw", "--", "env", f"CLAUDECLAW_AGENT_USER={AGENT}",
            "python3", "-I", "-c", script,
        ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def iso(
    tmp_path_factory: pytest.TempPathFactory,
    claudeclaw_deb: Path,  # noqa: F811
    real_claude_path: Path,  # noqa: F811
) -> Iterator[Iso]:
    real = real_claude_path.resolve()
    top = next(p for p in real.parents if p.name == "node_modules").parent
    claude_in_ct = f"{CLI_IN_CT}/{real.relative_to(top)}"
    base = Path(tmp_path_factory.mktemp("sdct-iso")) / "ct"
    ct = boot_container(base, dict(os.environ, SDCT_BIND=f"{top}:{CLI_IN_CT}:ro"))
    try:
        with FakeAnthropic() as api:
            shutil.copy(claudeclaw_deb, ct.root / "tmp" / claudeclaw_deb.name)
            ct.run("dpkg", "-i", f"/tmp/{claudeclaw_deb.name}", timeout=120)
            ct.write("/etc/claudeclaw/canary", CANARY, mode=0o600)
            ct.write(
                DROPIN,
                "[Unit]\nStartLimitIntervalSec=0\n"  # these tests restart it often
                "[Service]\n"
                f"Environment=ANTHROPIC_BASE_URL={api.url} ANTHROPIC_API_KEY=dummy "
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1 "
                "DISABLE_AUTOUPDATER=1 DISABLE_ERROR_REPORTING=1 CLAUDE_CODE_MAX_RETRIES=0\n"
                f"Environment={CANARY_ENV}={CANARY}\n"
                "LoadCredential=canary:/etc/claudeclaw/canary\n"
                "RestartSec=500ms\n",
            )

            def configure(data: dict[str, Any]) -> None:
                data.setdefault("runner", {})["claudePath"] = claude_in_ct
                data.setdefault("discord", {})["allowedUserIds"] = ALLOWLIST
                data.setdefault("limits", {})["shutdownGraceSeconds"] = 3

            ct.settings(configure)
            ct.run("systemctl", "daemon-reload")
            ct.run("systemctl", "start", UNIT, timeout=120)
            yield Iso(ct, api)
    finally:
        stop_container(base)


def _stat(ct: Container, path: str) -> str:
    return ct.run("stat", "-c", "%U:%G %a", path).stdout.strip()


def test_the_layout_and_the_daemons_capabilities(iso: Iso) -> None:
    ct = iso.ct
    assert re.match(
        r"uid=\d+\(claudeclaw-agent\) gid=\d+\(claudeclaw\)", ct.run("id", AGENT).stdout
    )
    assert _stat(ct, PROJECT) == "claudeclaw:claudeclaw 1770"
    assert _stat(ct, f"{PROJECT}/.claude") == "claudeclaw:claudeclaw 750"
    assert _stat(ct, STATE) == "claudeclaw:claudeclaw 710"
    assert _stat(ct, OUTBOX) == "claudeclaw:claudeclaw 770"
    assert _stat(ct, SETTINGS) == "claudeclaw:claudeclaw 600"
    assert _stat(ct, AGENT_HOME) == f"{AGENT}:claudeclaw 750"
    status = ct.run("cat", f"/proc/{iso.main_pid()}/status").stdout
    caps = dict(re.findall(r"^(Cap\w+|NoNewPrivs):\s+(\S+)", status, re.M))
    assert int(caps["CapEff"], 16) == (1 << 5) | (1 << 6) | (1 << 7)  # KILL, SETGID, SETUID
    assert int(caps["CapBnd"], 16) == int(caps["CapEff"], 16)
    assert caps["NoNewPrivs"] == "1"


def test_claude_runs_as_the_agent_with_nothing_of_the_daemon(iso: Iso) -> None:
    out = iso.tool(
        "Bash",
        {"command": "id -un; id -gn; grep -E '^(Cap(Inh|Prm|Eff|Amb)|NoNewPrivs)' "
         "/proc/self/status; env; echo HOME=$HOME"},
    )  # fmt: skip
    assert f"is_error=False: {AGENT}\nclaudeclaw\n" in out, out
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert re.search(rf"{cap}:\s+0+\b", out), (cap, out)
    assert re.search(r"NoNewPrivs:\s+1", out)
    assert f"HOME={AGENT_HOME}" in out
    assert CANARY not in out and "CREDENTIALS_DIRECTORY" not in out and "NOTIFY_SOCKET" not in out


@pytest.mark.parametrize("level", ["locked", "strict", "moderate", "unrestricted"])
def test_claude_cannot_change_its_rules_read_secrets_or_kill_the_daemon(
    iso: Iso, level: str
) -> None:
    ct = iso.ct
    ct.settings(lambda data: data["security"].__setitem__("level", level))
    ct.run("systemctl", "restart", UNIT, timeout=120)
    before = iso.settings_bytes()
    pid = iso.main_pid()
    has_bash = level in ("moderate", "unrestricted")
    bash = {  # marker printed when the step fails
        "no-credential": f"cat {CREDENTIAL} /etc/claudeclaw/canary",
        "no-environ": f"cat /proc/{pid}/environ",
        "no-settings-write": f"printf '%s' '{EVIL}' > {SETTINGS}",
        "no-swap": f"mv {PROJECT}/.claude {PROJECT}/.claude.old",
        "no-kill": f"kill -9 {pid}",
        "no-group-kill": f"kill -TERM -{pid}",
        "no-control-socket": 'python3 -c "import socket; '
        "socket.socket(socket.AF_UNIX).connect('/run/claudeclaw/control.sock')\"",
        "no-environ-anywhere": "for p in /proc/[0-9]*; do cat $p/environ; done | "
        f"grep -q {CANARY_ENV}",
    }
    attacks: list[tuple[str, dict[str, Any]]] = [
        ("Write", {"file_path": SETTINGS, "content": EVIL}),
        ("Read", {"file_path": SETTINGS}),
        ("Read", {"file_path": CREDENTIAL}),
        ("Read", {"file_path": f"/proc/{pid}/environ"}),
        (
            "Bash",
            {
                "command": " ".join(
                    f"{step} 2>/dev/null || echo {mark};" for mark, step in bash.items()
                )
            },
        ),
    ]
    for name, tool_input in attacks:
        out = iso.tool(name, tool_input)
        assert CANARY not in out, (level, name, out)
        if name == "Bash" and has_bash:
            missing = [mark for mark in bash if mark not in out]
            assert not missing, (level, missing, out)
        elif name == "Bash":
            assert "No such tool available: Bash" in out, out
        else:
            assert "is_error=True" in out, (level, name, out)
    assert iso.main_pid() == pid, "the daemon was killed"
    assert iso.settings_bytes() == before
    assert ct.run("test", "-d", STATE, check=False).returncode == 0
    assert ct.run("test", "-e", f"{PROJECT}/.claude.old", check=False).returncode != 0
    ct.run("systemctl", "restart", UNIT, timeout=120)
    assert iso.settings_bytes() == before
    settings = json.loads(before)
    assert settings["security"]["level"] == level
    assert settings["discord"]["allowedUserIds"] == ALLOWLIST
    # the model never saw the secret either (tool results are sent back to the API)
    assert all(CANARY not in json.dumps(r.body) for r in iso.api.requests)


def test_ordinary_work_still_works(iso: Iso) -> None:
    """Claude writes project files and images in the outbox; the daemon reads its
    transcript (what /context does) and would upload the image."""
    ct = iso.ct
    ct.settings(lambda data: data["security"].__setitem__("level", "moderate"))
    ct.run("systemctl", "restart", UNIT, timeout=120)
    out = iso.tool("Write", {"file_path": f"{PROJECT}/notes.md", "content": "first\n"})
    assert "is_error=False" in out, out
    out = iso.tool("Write", {"file_path": f"{PROJECT}/notes.md", "content": "second\n"})
    assert "is_error=False" in out, out
    assert (ct.root / PROJECT.lstrip("/") / "notes.md").read_text() == "second\n"
    assert _stat(ct, f"{PROJECT}/notes.md").startswith(f"{AGENT}:claudeclaw")
    png = "\\x89PNG\\r\\n\\x1a\\n chart"
    out = iso.tool(
        "Bash",
        {"command": f"mkdir -p src && echo ok > src/a.txt && printf '{png}' > {OUTBOX}/chart.png"
         " && git init -q . && git add src && echo git-ok"},
    )  # fmt: skip
    assert "git-ok" in out, out
    started = time.time() - 60
    uploaded = iso.as_daemon(
        "from pathlib import Path\n"
        "from claudeclaw.frontend.attachments import uploadable_images\n"
        "from claudeclaw.frontend.delivery import _read_screened\n"
        f"found = uploadable_images(['{OUTBOX}/chart.png'], [Path('{OUTBOX}')], "
        f"made_after={started}, max_bytes=10**6)\n"
        "kept, refused = _read_screened(found)\n"
        "print([(n, len(d)) for n, d in kept], refused)\n"
    )
    assert uploaded.strip() == "[('chart.png', 14)] []", uploaded
    session = json.loads((ct.root / STATE.lstrip("/") / "session.json").read_text())
    session_id = session["sessionId"]
    usage = iso.as_daemon(
        "from pathlib import Path\n"
        "from claudeclaw.frontend import context as c\n"
        f"path = c.find_transcript('{session_id}', Path('{PROJECT}'), c.claude_config_dir())\n"
        "usage = c.read_context_usage(path)\n"
        "print(path, usage.assistant_turns if usage else None)\n"
    )
    path, turns = usage.split()
    assert path.startswith(f"{AGENT_HOME}/.claude/projects/") and int(turns) >= 3, usage


def test_an_instance_of_the_template_runs_claude_as_the_agent_too(iso: Iso) -> None:
    """claudeclaw@NAME: the shared agent user, with a HOME of the instance's own."""
    ct = iso.ct
    project = f"{PROJECT}/demo"
    claude = json.loads(iso.settings_bytes())["runner"]["claudePath"]
    ct.sh(
        f"set -e; install -d -o claudeclaw -g claudeclaw -m 0700 {project}; "
        f"cd {project} && runuser -u claudeclaw -- claudeclaw init --project {project} >/dev/null; "
        "install -d -m 0750 -g claudeclaw /etc/claudeclaw/demo; "
        "install -m 0600 /dev/null /etc/claudeclaw/demo/discord-token; "
        f"mkdir -p /etc/systemd/system/claudeclaw@demo.service.d; "
        f"cp {DROPIN} /etc/systemd/system/claudeclaw@demo.service.d/; "
        "sed -i '/LoadCredential/d' /etc/systemd/system/claudeclaw@demo.service.d/*.conf; "
        "systemctl daemon-reload"
    )
    ct.run(
        "runuser", "-u", "claudeclaw", "--", "python3", "-c",
        "import json, sys; p = sys.argv[1]; d = json.load(open(p)); "
        "d['runner']['claudePath'] = sys.argv[2]; open(p, 'w').write(json.dumps(d))",
        f"{project}/.claude/claudeclaw/settings.json", claude,
    )  # fmt: skip
    started = ct.run("systemctl", "start", "claudeclaw@demo", timeout=120, check=False)
    journal = ct.run("journalctl", "-u", "claudeclaw@demo", "-o", "cat", "--no-pager").stdout
    assert started.returncode == 0, journal[-2000:]
    try:
        prompt = 'TOOL:Bash:{"command": "id -un; echo HOME=$HOME; pwd"}'
        out = ct.run(
            "runuser", "-u", "claudeclaw", "--", "claudeclaw", "send", "--project", project,
            "-q", "-", input=prompt, check=False, timeout=120,
        ).stdout  # fmt: skip
        assert f"{AGENT}\nHOME={AGENT_HOME}/demo\n{project}" in out, out
        assert _stat(ct, f"{AGENT_HOME}/demo") == f"{AGENT}:claudeclaw 750"
        assert _stat(ct, project) == "claudeclaw:claudeclaw 1770"
    finally:
        ct.run("systemctl", "stop", "claudeclaw@demo", timeout=120, check=False)


def test_an_upgrade_from_one_user_keeps_the_session_and_the_work(iso: Iso) -> None:
    """The layout before two users (HOME = the project, everything the daemon's), then the
    package installed over it: the session resumes, and the agent owns the old work."""
    ct = iso.ct
    session_id = json.loads((ct.root / STATE.lstrip("/") / "session.json").read_text())["sessionId"]
    slug = "-var-lib-claudeclaw"
    old_projects = f"{PROJECT}/.claude/projects/{slug}"
    ct.run("systemctl", "stop", UNIT, timeout=120)
    ct.sh(
        f"set -e; mkdir -p {old_projects}; "
        f"cp {AGENT_HOME}/.claude/projects/{slug}/{session_id}.jsonl {old_projects}/; "
        f"echo '{{}}' > {PROJECT}/.claude/.credentials.json; echo old > {PROJECT}/old-work.txt; "
        f"echo old > {PROJECT}/demo/work.txt; "  # claudeclaw@demo's project (test above)
        f"chown -R claudeclaw:claudeclaw {PROJECT}; chmod -R go-rwx {PROJECT}; "
        f"userdel {AGENT}; rm -rf {AGENT_HOME}"
    )
    deb = next((ct.root / "tmp").glob("claudeclaw_*.deb")).name
    ct.run("dpkg", "-i", f"/tmp/{deb}", timeout=120)
    ct.run("systemctl", "start", UNIT, timeout=120)
    assert _stat(ct, f"{PROJECT}/old-work.txt").startswith(f"{AGENT}:claudeclaw")
    assert _stat(ct, f"{AGENT_HOME}/.claude/.credentials.json") == f"{AGENT}:claudeclaw 600"
    # the instance's project: its work is the agent's, its state still the daemon's
    assert _stat(ct, f"{PROJECT}/demo/work.txt").startswith(f"{AGENT}:claudeclaw")
    assert _stat(ct, f"{PROJECT}/demo").startswith("claudeclaw:claudeclaw")
    demo_state = f"{PROJECT}/demo/.claude/claudeclaw"
    assert _stat(ct, f"{demo_state}/settings.json") == "claudeclaw:claudeclaw 600"
    assert _stat(ct, f"{AGENT_HOME}/demo/.claude") == f"{AGENT}:claudeclaw 750"
    assert ct.run("find", PROJECT, "-path", "*/.claude/claudeclaw*", "-user", AGENT).stdout == ""
    out = iso.send("hello after the upgrade")
    match = re.search(r"FAKE-REPLY user_msgs=(\d+)", out)
    assert match and int(match.group(1)) > 1, out  # the history was sent again: resumed
    after = json.loads((ct.root / STATE.lstrip("/") / "session.json").read_text())
    assert after["sessionId"] == session_id
    out = iso.tool("Write", {"file_path": f"{PROJECT}/old-work.txt", "content": "new\n"})
    assert "is_error=False" in out, out
