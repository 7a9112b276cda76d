"""A tiny end-to-end video model that shows vidnoise working: ``vidnoise demo``.

Submodules (heavier optional dependencies - imageio, safetensors, tqdm, pillow - are imported
lazily inside the functions that need them, so importing this package needs torch only):

* :mod:`vidnoise.demo.data`    - ``MovingShapes`` (procedural, no download), ``VideoFolder``
* :mod:`vidnoise.demo.model`   - ``TinyVideoUNet``: a (2+1)-D conv U-Net conditioned on the
  timestep and the pyramid stage, the same weights at every pyramid resolution
* :mod:`vidnoise.demo.train`   - pyramidal (or flat) flow-matching training, EMA, atomic
  checkpoints, bit-for-bit resume, DistributedDataParallel under ``torchrun``
* :mod:`vidnoise.demo.sample`  - pyramid / flat sampling from a checkpoint, GIF and PNG output
* :mod:`vidnoise.demo.metrics` - sample-quality figures (random-encoder Fréchet distance,
  temporal flicker, colour histograms)
* :mod:`vidnoise.demo.run`     - the ``vidnoise demo`` pipeline and its report

Conventions are the library's: flow ``x = (1 - σ)·x0 + σ·ε`` with σ the noise fraction,
velocity ``v = ε - x0``; a pyramid stage's target is ``start - end`` (the same direction).
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("data", "model", "train", "sample", "metrics", "checkpoint", "run", "images")

__all__ = ["DemoError", *_SUBMODULES]


class DemoError(ValueError):
    """Bad user input to the demo (missing checkpoint, empty folder, bad sizes, ...).

    The command line prints its message as one line and exits non-zero, with no traceback.
    """


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'vidnoise.demo' has no attribute {name!r}")
