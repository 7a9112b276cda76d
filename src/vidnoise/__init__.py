"""vidnoise: the noise side of video diffusion and flow-matching models.

Conventions (see ``docs/conventions.md``):

* flow paths: ``x = (1 - sigma) * x0 + sigma * eps``, sigma in [0, 1] is the noise fraction,
  velocity ``v = eps - x0``;
* EDM / VE paths: ``x = x0 + sigma * eps``, sigma is the noise standard deviation;
* every other convention (Mochi's target, reversed timesteps, Pyramid-Flow's gamma sign,
  signal level) goes through a named converter in :mod:`vidnoise.conventions`.

Submodules are imported lazily, so ``import vidnoise`` needs only torch and numpy.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "noise",
    "diagnostics",
    "paths",
    "conventions",
    "schedules",
    "timesteps",
    "pyramid",
    "conditioning",
    "samplers",
    "oracles",
    "demo",
    "cli",
)

# Names re-exported at the top level, resolved lazily: name -> submodule.
_EXPORTS = {
    "randn": "noise",
    "rand": "noise",
    "block_noise": "noise",
    "resample_noise": "noise",
    "resample_variance": "noise",
    "noise_pyramid": "noise",
    "noise_report": "diagnostics",
    "assert_white": "diagnostics",
    "NoiseReport": "diagnostics",
    "FlowPath": "paths",
    "EDMPath": "paths",
    "VPPath": "paths",
    "PathSample": "paths",
    "PyramidSchedule": "pyramid",
    "StageBatch": "pyramid",
}

__all__ = sorted(set(_SUBMODULES) | set(_EXPORTS))


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'vidnoise' has no attribute {name!r}")


def __dir__():
    return __all__
