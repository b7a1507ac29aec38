"""Shared pytest configuration. Fixture families live in their own modules."""

pytest_plugins = [
    "tests.fixtures_claude",
    "tests.fixtures_discord",
    "tests.fixtures_daemon",
    "tests.fixtures_systemd",
]
