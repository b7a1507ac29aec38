"""``python -m claudeclaw`` is the ``claudeclaw`` command."""

from claudeclaw.cli import main

raise SystemExit(main())
