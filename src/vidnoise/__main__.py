"""``python -m vidnoise``: the command line (see :mod:`vidnoise.cli`; :func:`~vidnoise.cli.entry`
sets the OpenMP waiting before torch loads, restarting the interpreter once if needed)."""

from vidnoise.cli import entry

entry()
