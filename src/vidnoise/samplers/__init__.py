"""Samplers in the k-diffusion shape: plain functions whose loop reads like the algorithm.

* :func:`sample_flow`  (flow Euler / Heun / midpoint, ``model(x, sigma) -> v = eps - x0``)
* :func:`sample_edm`   (EDM Algorithm 2 with churn and an initial-noise policy)
* :func:`sample_pyramid` (Pyramid-Flow's pyramidal flow sampler with stage jumps)
* :func:`rollout`      (autoregressive generation with conditioning-frame noise)
* :func:`cfg`, :func:`dynamic_cfg` (classifier-free guidance)

Names are resolved lazily from the submodules ``flow``, ``edm``, ``pyramid``,
``autoregressive`` and ``guidance``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "sample_flow": "flow",
    "sample_edm": "edm",
    "sample_pyramid": "pyramid",
    "rollout": "autoregressive",
    "cfg": "guidance",
    "dynamic_cfg": "guidance",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'vidnoise.samplers' has no attribute {name!r}")


def __dir__():
    return __all__
