"""The demo's one error type (kept apart so every submodule can import it first)."""

from __future__ import annotations

__all__ = ["DemoError"]


class DemoError(ValueError):
    """Bad user input to the demo (missing checkpoint, empty folder, bad sizes, ...).

    The command line prints its message as one line and exits non-zero, with no traceback.
    """
