"""``python -m vidnoise``: the command line (see :mod:`vidnoise.cli`)."""

from vidnoise.cli import main

raise SystemExit(main())
