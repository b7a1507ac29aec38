"""pytest fixtures (filled in by their owners)."""
