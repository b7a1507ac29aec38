"""The environment the daemon's workers (and through them the fork server and ``claude``)
start with.

No secrets: the Discord token (by name and by value), systemd's credential directory, the
test-hook switch, systemd's service-only variables and every credential-named variable
are dropped. Added: the owner tag that lets a later daemon find processes a dead one left
behind (``procs.py``), the Anthropic API key when it is a systemd credential, and this
package first on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import claudeclaw
from claudeclaw.logs import register_secret
from claudeclaw.notify import child_env
from claudeclaw.procs import OWNER_ENV, owner_value
from claudeclaw.redaction import is_secret_env
from claudeclaw.service import API_KEY_CREDENTIAL, read_credential

TEST_HOOKS_ENV = "CLAUDECLAW_TEST_HOOKS"  # set by test harnesses only: see testhooks.py
SECRET_ENV = ("DISCORD_TOKEN", "CREDENTIALS_DIRECTORY", TEST_HOOKS_ENV)
# Where this claudeclaw is imported from: its workers import the same code.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(claudeclaw.__file__)))


def worker_env(environ: Mapping[str, str], *, token: str, tag: str) -> dict[str, str]:
    """``environ`` made fit for workers (see the module docstring); ``tag`` is the
    project's (``procs.project_tag``), ``token`` the Discord token ("" when none)."""
    env = child_env(dict(environ))
    for name in [*SECRET_ENV, *filter(is_secret_env, env)]:
        env.pop(name, None)
    if token:
        env = {k: v for k, v in env.items() if v != token}
    env[OWNER_ENV] = owner_value(tag)
    api_key = read_credential(API_KEY_CREDENTIAL)
    if api_key:  # a systemd credential: never in Environment=, which anyone can list
        register_secret(api_key)
        env["ANTHROPIC_API_KEY"] = api_key
    # workers and the fork server import exactly the code this supervisor runs, whatever
    # else is installed (claude's own environment drops PYTHONPATH again)
    env["PYTHONPATH"] = os.pathsep.join(
        [PACKAGE_ROOT, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    return env
