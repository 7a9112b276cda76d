"""A tiny end-to-end video model that shows vidnoise working: ``vidnoise demo``.

Submodules (the optional dependencies - imageio, safetensors, tqdm, pillow - are imported
inside the functions that need them, so importing this package needs torch and numpy only):

* :mod:`vidnoise.demo.data`        - ``MovingShapes`` (procedural, no download), ``VideoFolder``
* :mod:`vidnoise.demo.model`       - ``TinyVideoUNet``: a (2+1)-D conv U-Net conditioned on the
  timestep and the pyramid stage, the same weights at every pyramid resolution
* :mod:`vidnoise.demo.config`      - ``TrainConfig``: every training default derived from
  ``stages``, one check for new runs, resumes and loads
* :mod:`vidnoise.demo.trainer`     - one process's model, EMA, optimizer and step
* :mod:`vidnoise.demo.checkpoint`  - kill-safe checkpoints, recovery, the output-folder lock
* :mod:`vidnoise.demo.distributed` - ``torchrun`` set-up (DistributedDataParallel)
* :mod:`vidnoise.demo.train`       - the training loop (signals, divergence, budgets)
* :mod:`vidnoise.demo.sample`      - pyramid / flat sampling from a checkpoint, GIF and PNG
* :mod:`vidnoise.demo.metrics`     - sample-quality figures (random-encoder Fréchet distance,
  temporal flicker, colour histograms)
* :mod:`vidnoise.demo.run`         - the ``vidnoise demo`` pipeline and its report

Conventions are the library's: flow ``x = (1 - σ)·x0 + σ·ε`` with σ the noise fraction,
velocity ``v = ε - x0``; a pyramid stage's target is ``start - end`` (the same direction).
"""

from __future__ import annotations

from vidnoise.demo import (
    checkpoint,
    config,
    data,
    distributed,
    metrics,
    model,
    run,
    sample,
    train,
    trainer,
)
from vidnoise.demo._errors import DemoError

__all__ = ["DemoError", "checkpoint", "config", "data", "distributed", "metrics", "model",
           "run", "sample", "train", "trainer"]
