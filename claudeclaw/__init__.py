"""claudeclaw: work with Claude Code from Discord, one session per thread."""

__version__ = "0.1.0"
