"""The ``claude`` argv and env: upstream's flags, the prompt after ``--``, no secret leaks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from claudeclaw.claude import project_slug, transcript_path
from claudeclaw.claude.argv import (
    DROPPED_ENV,
    SCOPE_PREAMBLE,
    build_argv,
    build_env,
    build_system_prompt,
    is_session_id,
    protected_path_rules,
)
from tests.fixtures_claude import CLI_SAMPLES, SettingsFactory

SID = "0c970f1f-40cd-4fa7-88ab-10c87fd5787f"
CWD = Path("/srv/project/agents/t-123")
PROTECT = ["--disallowedTools", " ".join(protected_path_rules(CWD))]


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _flags_before_prompt(argv: list[str]) -> list[str]:
    return argv[: argv.index("--")]


@pytest.mark.parametrize("prompt", ["--version", "-x", "-p", "--", "--resume abc", "hi\n--model x"])
def test_prompt_goes_after_double_dash_verbatim(
    claude_settings: SettingsFactory, prompt: str
) -> None:
    argv = build_argv(claude_settings("claude"), prompt, None, cwd=CWD)
    assert argv[-2:] == ["--", prompt]
    assert argv.index("--") == len(argv) - 2  # the only "--", right before the prompt


def test_base_argv_matches_upstream_order(claude_settings: SettingsFactory) -> None:
    argv = build_argv(claude_settings("/opt/claude"), "hi", SID, cwd=CWD)
    assert argv[:5] == ["/opt/claude", "-p", "--output-format", "stream-json", "--verbose"]
    assert argv[5] == "--dangerously-skip-permissions"
    assert argv.index("--resume") < argv.index("--append-system-prompt")
    assert _value(argv, "--resume") == SID


def test_resume_only_with_a_valid_uuid(claude_settings: SettingsFactory) -> None:
    settings = claude_settings("claude")
    assert "--resume" not in build_argv(settings, "hi", None, cwd=CWD)
    assert "--resume" not in build_argv(settings, "hi", "", cwd=CWD)
    for bad in ("not-a-uuid", "--version", f"{SID} x", SID[:-1], "my session title"):
        argv = build_argv(settings, "hi", bad, cwd=CWD)
        assert "--resume" not in argv, bad
        assert bad not in _flags_before_prompt(argv)
    assert _value(build_argv(settings, "hi", SID.upper(), cwd=CWD), "--resume") == SID.upper()


def test_is_session_id() -> None:
    assert is_session_id(SID)
    assert not is_session_id(None)
    assert not is_session_id("")
    assert not is_session_id("00000000-0000-4000-8000-00000000000g")


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("locked", ["--dangerously-skip-permissions", "--tools", "Read,Grep,Glob", *PROTECT]),
        (
            "strict",
            [
                "--dangerously-skip-permissions",
                "--disallowedTools",
                "Bash,WebSearch,WebFetch",
                *PROTECT,
            ],
        ),
        ("moderate", ["--dangerously-skip-permissions", *PROTECT]),
        ("unrestricted", ["--dangerously-skip-permissions"]),
    ],
)
def test_security_level_flags(
    claude_settings: SettingsFactory, level: str, expected: list[str]
) -> None:
    argv = build_argv(claude_settings("claude", level=level), "hi", None, cwd=CWD)
    assert argv[5 : argv.index("--append-system-prompt")] == expected


def test_tool_lists_are_joined_by_space_after_the_level_flags(
    claude_settings: SettingsFactory,
) -> None:
    settings = claude_settings(
        "claude",
        level="strict",
        allowed_tools=("Read", "Bash(git *)"),
        disallowed_tools=("Write", "Edit"),
    )
    argv = build_argv(settings, "hi", None, cwd=CWD)
    assert argv[5 : argv.index("--append-system-prompt")] == [
        "--dangerously-skip-permissions",
        "--disallowedTools",
        "Bash,WebSearch,WebFetch",
        *PROTECT,
        "--allowedTools",
        "Read Bash(git *)",
        "--disallowedTools",
        "Write Edit",
    ]


def test_protected_path_rules_name_the_state_dir_absolutely() -> None:
    """Absolute (``//``) rules: the state files may be neither written nor read, the CLI's
    auto-run settings not written; the outbox and inbox are not covered."""
    rules = protected_path_rules(CWD)
    state = "//srv/project/agents/t-123/.claude/claudeclaw"
    for tool in ("Edit", "Read"):
        assert f"{tool}({state}/*.json*)" in rules
        assert f"{tool}({state}/undelivered/**)" in rules
    assert f"Edit({state}/*.lock)" in rules
    assert "Edit(//srv/project/agents/t-123/.claude/settings.json)" in rules
    assert "Edit(//srv/project/agents/t-123/.mcp.json)" in rules
    assert not [r for r in rules if "outbox" in r or "inbox" in r or r.endswith("claudeclaw/**)")]


def test_credentials_claude_does_not_need_are_dropped(claude_settings: SettingsFactory) -> None:
    base = {
        "PATH": "/usr/bin",
        "GITHUB_TOKEN": "ghp_x",
        "OPENAI_API_KEY": "sk-x",
        "DB_PASSWORD": "pw",
        "MY_SERVICE_SECRET": "s",
        "ANTHROPIC_API_KEY": "sk-ant-k",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "KEYBOARD_LAYOUT": "us",
    }
    env = build_env(base, claude_settings("claude"))
    assert env == {
        "PATH": "/usr/bin",
        "ANTHROPIC_API_KEY": "sk-ant-k",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "KEYBOARD_LAYOUT": "us",
    }


def test_model_is_passed_unless_empty_or_glm(claude_settings: SettingsFactory) -> None:
    argv = build_argv(claude_settings("claude", model="claude-sonnet-4-5"), "hi", None, cwd=CWD)
    assert _value(argv, "--model") == "claude-sonnet-4-5"
    assert argv.index("--model") > argv.index("--append-system-prompt")
    assert "--model" not in build_argv(claude_settings("claude"), "hi", None, cwd=CWD)
    assert "--model" not in build_argv(claude_settings("claude", model="glm"), "hi", None, cwd=CWD)


def test_system_prompt_scopes_to_cwd_except_unrestricted(claude_settings: SettingsFactory) -> None:
    moderate = build_system_prompt(claude_settings("claude"), CWD)
    assert moderate.startswith(SCOPE_PREAMBLE)
    assert str(CWD) in moderate and "CRITICAL SECURITY CONSTRAINT" in moderate
    unrestricted = build_system_prompt(claude_settings("claude", level="unrestricted"), CWD)
    assert unrestricted == SCOPE_PREAMBLE
    argv = build_argv(claude_settings("claude"), "hi", None, cwd=CWD)
    assert _value(argv, "--append-system-prompt") == moderate


def test_a_thread_worktree_is_scoped_to_its_project(claude_settings: SettingsFactory) -> None:
    """The inbox and outbox lie under the project, not under the worktree: the scope is the
    project, and Claude is told to work in its own worktree."""
    root = Path("/srv/project")
    worktree = root / ".claude" / "claudeclaw" / "worktrees" / "123"
    text = build_system_prompt(claude_settings("claude"), worktree, root)
    assert f"you are scoped to the directory {root}." in text
    assert f"Your working directory {worktree} is a git worktree of its own" in text
    assert f"main checkout at {root}" in text
    same = build_system_prompt(claude_settings("claude"), root, root)
    assert same == build_system_prompt(claude_settings("claude"), root)  # no worktree: as ever
    open_ = build_system_prompt(claude_settings("claude", level="unrestricted"), worktree, root)
    assert "CRITICAL" not in open_ and "git worktree of its own" in open_
    argv = build_argv(claude_settings("claude"), "hi", None, cwd=worktree, scope=root)
    assert _value(argv, "--append-system-prompt") == text


def test_system_prompt_appends_configured_text_but_not_claude_md(
    claude_settings: SettingsFactory, tmp_path: Path
) -> None:
    (tmp_path / "CLAUDE.md").write_text("PROJECT-MEMORY-MARKER")
    settings = claude_settings("claude", append_system_prompt="Answer in French.")
    text = build_system_prompt(settings, tmp_path)
    assert text.endswith("\n\nAnswer in French.")
    assert "PROJECT-MEMORY-MARKER" not in text  # the CLI loads CLAUDE.md itself


def test_every_flag_we_pass_exists_in_the_pinned_cli_help(claude_settings: SettingsFactory) -> None:
    help_text = (CLI_SAMPLES / "claude-2.1.330-help.txt").read_text()
    settings = claude_settings(
        "claude", level="locked", allowed_tools=("Read",), disallowed_tools=("Bash",), model="m"
    )
    argv = build_argv(settings, "hi", SID, cwd=CWD)
    flags = {a for a in _flags_before_prompt(argv) if a.startswith("-")}
    for flag in flags:
        assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", help_text, re.M), flag


def test_env_drops_inherited_claude_and_systemd_variables(claude_settings: SettingsFactory) -> None:
    base = {name: "x" for name in DROPPED_ENV} | {"PATH": "/bin", "HOME": "/home/u"}
    env = build_env(base, claude_settings("claude"))
    assert env == {"PATH": "/bin", "HOME": "/home/u"}
    for name in (
        "CLAUDECODE",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "CLAUDE_CODE_PROVIDER_MANAGED_BY_HOST",
        "DISCORD_TOKEN",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "CREDENTIALS_DIRECTORY",
    ):
        assert name in DROPPED_ENV


def test_env_drops_the_discord_token_under_any_name(claude_settings: SettingsFactory) -> None:
    token = "MTIz.discord-token-value.xyz"
    base = {"PATH": "/bin", "MY_BOT_SECRET": token, "OTHER": "keep", "PARTIAL": token + "x"}
    env = build_env(base, claude_settings("claude", discord_token=token))
    assert token not in env.values()
    assert env["OTHER"] == "keep"
    assert "MY_BOT_SECRET" not in env
    assert env["PARTIAL"] == token + "x"  # only exact values are secrets


def test_env_does_not_mutate_base_and_sets_auth_token_from_api(
    claude_settings: SettingsFactory,
) -> None:
    base = {"PATH": "/bin", "CLAUDECODE": "1"}
    env = build_env(base, claude_settings("claude", api="sk-ant-api-key"))
    assert base == {"PATH": "/bin", "CLAUDECODE": "1"}
    assert env["ANTHROPIC_AUTH_TOKEN"] == "sk-ant-api-key"
    assert "ANTHROPIC_AUTH_TOKEN" not in build_env(base, claude_settings("claude"))


def test_env_for_glm_switches_endpoint_like_upstream(claude_settings: SettingsFactory) -> None:
    env = build_env({}, claude_settings("claude", model="glm"))
    assert env["ANTHROPIC_BASE_URL"] == "https://api.z.ai/api/anthropic"


@pytest.mark.parametrize(
    ("cwd", "slug"),
    [("/tmp/work", "-tmp-work"), ("/tmp/x/a.b_c d", "-tmp-x-a-b-c-d")],
)
def test_transcript_path_uses_the_cli_slug(cwd: str, slug: str) -> None:
    assert project_slug(Path(cwd)) == slug
    assert transcript_path(Path(cwd), SID, {"HOME": "/home/u"}) == Path(
        f"/home/u/.claude/projects/{slug}/{SID}.jsonl"
    )
    assert transcript_path(Path(cwd), SID, {"HOME": "/h", "CLAUDE_CONFIG_DIR": "/c"}) == Path(
        f"/c/projects/{slug}/{SID}.jsonl"
    )
