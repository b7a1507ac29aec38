"""Issue 12 in the packaged set-up, under a real systemd 252 (tests/systemd/sdct.sh).

Shares the session's container (fixtures_systemd.systemd_container) with
test_systemd_e2e.py; each test leaves the service running and its files as it found them.
``doctor``, ``status`` and ``send`` are run as a user would: from ``/``, without
``--project``, as the service's user, as root and as another user (``nobody``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from claudeclaw.redaction import is_secret_env
from tests.fixtures_systemd import (  # noqa: F401 - fixtures
    PROJECT,
    SETTINGS,
    UNIT,
    Container,
    claudeclaw_deb,
    systemd_container,
)

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(300)]

THREAD = "323456789012345678"
API_KEY_FILE = "/etc/claudeclaw/anthropic-api-key"
TOKEN_FILE = "/etc/claudeclaw/discord-token"
# Two users (issue 11): claude runs as the agent, with its own HOME and login.
AGENT = "claudeclaw-agent"
AGENT_HOME = "/var/lib/claudeclaw-agent"
LOGIN_FILE = f"{AGENT_HOME}/.claude/.credentials.json"
DAEMON_LOGIN_FILE = f"{PROJECT}/.claude/.credentials.json"  # the daemon's HOME: not claude's
LOGIN_FIX = f"cd {AGENT_HOME} && sudo -u {AGENT} env HOME={AGENT_HOME} claude, type /login"


@pytest.fixture
def ct(systemd_container: Container) -> Iterator[Container]:  # noqa: F811
    systemd_container.run("systemctl", "reset-failed", UNIT, check=False)
    if systemd_container.show("ActiveState")["ActiveState"] != "active":
        systemd_container.run("systemctl", "start", UNIT)
    yield systemd_container


def as_user(ct: Container, user: str, command: str, **kwargs: object) -> tuple[int, str]:
    """``command`` in a shell started in ``/`` as ``user`` (root: no runuser)."""
    script = f"cd / && {command}"
    if user == "root":
        done = ct.sh(script, check=False, **kwargs)  # type: ignore[arg-type]
    else:
        done = ct.run("runuser", "-u", user, "--", "sh", "-c", script, check=False, **kwargs)  # type: ignore[arg-type]
    return done.returncode, done.stdout + done.stderr


def test_doctor_as_the_service_user_knows_the_installed_layout(ct: Container) -> None:
    """README step 6: the token file is checked where the unit loads it, Claude's login
    in the agent's home (claude runs as claudeclaw-agent); the fixes are the real ones."""
    rc, out = as_user(ct, "claudeclaw", "claudeclaw doctor")
    assert "Traceback" not in out
    assert rc == 1, out
    assert f"{TOKEN_FILE} is empty" in out and f"cat > {TOKEN_FILE}" in out
    assert "LoadCredential" not in out  # the unit already does that
    assert "running as the service's user claudeclaw" in out
    assert f"[FAIL] claude login: claude is not logged in for {AGENT}: no {LOGIN_FILE}" in out
    assert f"fix: {LOGIN_FIX}" in out, out
    # the two-user modes (issue 11) are what doctor expects: no false failures
    for ok in ("state directory", "state files", "shared directories", "isolation"):
        assert f"[ok  ] {ok}: " in out, (ok, out)
    login = json.dumps({"claudeAiOauth": {"accessToken": "x" * 30, "refreshToken": "y" * 30}})
    # the daemon's own HOME is not where claude looks
    ct.run("runuser", "-u", "claudeclaw", "--", "sh", "-c",
           f"mkdir -p {PROJECT}/.claude && cat > {DAEMON_LOGIN_FILE}", input=login)  # fmt: skip
    try:
        _, out = as_user(ct, "claudeclaw", "claudeclaw doctor")
        assert f"[FAIL] claude login: claude is not logged in for {AGENT}" in out, out
        # as the login step does it: the agent, umask 077 (the CLI writes the file 0600)
        ct.run("runuser", "-u", AGENT, "--", "sh", "-c",
               f"umask 077 && mkdir -p {AGENT_HOME}/.claude && cat > {LOGIN_FILE}",
               input=login)  # fmt: skip
        assert ct.sh(f"stat -c '%U %a' {LOGIN_FILE}").stdout.strip() == f"{AGENT} 600"
        rc, out = as_user(ct, "claudeclaw", "claudeclaw doctor")
        # the daemon's user may not read the agent's file: that it is there is enough
        assert f"[ok  ] claude login: logged in ({LOGIN_FILE}; only {AGENT} may read" in out, out
        assert "Traceback" not in out and "x" * 30 not in out and "y" * 30 not in out
        _, out = as_user(ct, "root", "claudeclaw doctor")
        assert f"[ok  ] claude login: logged in ({LOGIN_FILE})" in out, out
        assert "[ok  ] shared directories" in out and "[ok  ] state directory" in out, out
    finally:
        ct.run("rm", "-f", LOGIN_FILE, DAEMON_LOGIN_FILE)


def test_doctor_as_root_checks_owners_against_the_service_user(ct: Container) -> None:
    """Plain ``sudo claudeclaw doctor``: no ``chown -R 0``; a settings.json copied in by
    root is caught, and the fix doctor prints makes it right."""
    _, out = as_user(ct, "root", "claudeclaw doctor")
    assert "Traceback" not in out
    assert "checking as root; the service runs as claudeclaw" in out, out
    assert "[ok  ] state directory" in out and "chown -R 0" not in out
    ct.sh(f"cp {SETTINGS} /tmp/s.json && install -m 0644 -o root -g root /tmp/s.json {SETTINGS}")
    try:
        _, out = as_user(ct, "root", "claudeclaw doctor")
        lines = out.splitlines()
        at = next(i for i, x in enumerate(lines) if "not owned by claudeclaw" in x)
        assert "settings.json (root)" in lines[at]
        fix = lines[at + 1].strip()
        assert fix.startswith("fix: sudo chown claudeclaw: "), fix
        ct.sh(fix.removeprefix("fix: ").replace("sudo ", ""))
        _, out = as_user(ct, "root", "claudeclaw doctor")
        assert "[ok  ] state files" in out, out
        assert ct.sh(f"stat -c '%U %a' {SETTINGS}").stdout.strip() == "claudeclaw 600"
    finally:
        ct.sh(f"install -m 0600 -o claudeclaw -g claudeclaw /tmp/s.json {SETTINGS}")


def test_doctor_as_another_user_never_crashes(ct: Container) -> None:
    rc, out = as_user(ct, "nobody", "claudeclaw doctor")
    assert "Traceback" not in out and "PermissionError" not in out
    assert rc == 1
    assert f"sudo -u claudeclaw claudeclaw doctor --project {PROJECT}" in out, out


def test_status_finds_the_service_and_reports_permission_denied(ct: Container) -> None:
    """Issue 12.5: no --project, from /: the installed service's project."""
    for user in ("root", "claudeclaw"):
        rc, out = as_user(ct, user, "claudeclaw status")
        assert rc == 0, (user, out)
        assert f"project {PROJECT}" in out
    rc, out = as_user(ct, "claudeclaw", "claudeclaw sessions list")
    assert rc == 0, out
    rc, out = as_user(ct, "nobody", "claudeclaw status")
    assert rc == 1, out
    assert "permission denied" in out and "sudo -u claudeclaw" in out
    assert "not running" not in out and "Traceback" not in out
    rc, out = as_user(ct, "root", "CLAUDECLAW_PROJECT=/srv/elsewhere claudeclaw status")
    assert rc == 4, out
    assert "/srv/elsewhere" in out and "$CLAUDECLAW_PROJECT" in out


def test_a_failed_run_is_an_error_entry_with_its_reason(ct: Container) -> None:
    """Issue 12.6: ``journalctl -p err`` shows a failed run and why."""
    rc, out = as_user(ct, "claudeclaw", f"claudeclaw send --thread {THREAD} ERROR:api401")
    assert rc == 1, out
    errors = ct.journal("-p", "err", "EVENT=worker.run_failed")
    assert errors, "no error entry for the failed run"
    last = errors[-1]
    assert last["REASON"] == "error" and "401" in last["ERROR"], last
    assert last.get("THREAD_ID") == THREAD


def test_an_api_key_credential_reaches_claude_and_nothing_else(ct: Container) -> None:
    """Issue 12.7: the key file is optional (the service runs without it), reaches claude
    as ANTHROPIC_API_KEY, and is never in ``systemctl show`` or the journal. Two users
    (issue 11): claude runs as claudeclaw-agent through setpriv, and the key is the only
    secret its environment holds (not the credentials directory, not a credential-named
    variable of the daemon's)."""
    assert ct.show("ActiveState")["ActiveState"] == "active"  # no key file: still starts
    key = "sk-ant-api03-" + "Q" * 60
    canary = "canary-" + uuid.uuid4().hex
    dropin = f"/etc/systemd/system/{UNIT}.d/30-api-key-test.conf"
    ct.write(API_KEY_FILE, key + "\n", mode=0o600)
    ct.write(dropin, f"[Service]\nEnvironment=EXAMPLE_SERVICE_PASSWORD={canary}\n")
    try:
        ct.run("systemctl", "daemon-reload")
        ct.run("systemctl", "restart", UNIT)
        rc, out = as_user(ct, "claudeclaw", f"claudeclaw send -q --thread {THREAD} ECHO_PROC")
        assert rc == 0, out
        proc = json.loads(out.splitlines()[0])  # the reply; stderr notes follow
        env = proc["env"]
        assert env["ANTHROPIC_API_KEY"] == key
        agent_uid = int(ct.run("id", "-u", AGENT).stdout)
        assert proc["uid"] == agent_uid, proc["uid"]  # really the agent, not the daemon
        assert proc["groups"] == [] or proc["groups"] == [proc["gid"]], proc["groups"]
        assert env["HOME"] == AGENT_HOME and env["USER"] == AGENT
        named = sorted(k for k in env if k != "ANTHROPIC_API_KEY" and is_secret_env(k))
        assert named == [], named
        for name in ("CREDENTIALS_DIRECTORY", "DISCORD_TOKEN", "NOTIFY_SOCKET", "PYTHONPATH"):
            assert name not in env, name
        assert canary not in json.dumps(env)
        assert [k for k, v in env.items() if key in v] == ["ANTHROPIC_API_KEY"]
        assert key not in ct.run("systemctl", "show", UNIT).stdout
        assert key not in ct.run("journalctl", "-u", UNIT, "-o", "json", "--no-pager").stdout
        _, doc = as_user(ct, "claudeclaw", "claudeclaw doctor")
        assert f"[ok  ] claude login: an API key in {API_KEY_FILE}" in doc, doc
        assert key not in doc
    finally:
        ct.run("rm", "-f", API_KEY_FILE, dropin)
        ct.run("systemctl", "daemon-reload")
        ct.run("systemctl", "restart", UNIT)
    assert ct.show("ActiveState")["ActiveState"] == "active"
