"""``python -m vidnoise``: the command line (see :mod:`vidnoise.cli`)."""

import os
import sys

if "torch" not in sys.modules:  # else vidnoise.cli.entry restarts with the setting
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vidnoise.cli import entry  # noqa: E402

entry()
