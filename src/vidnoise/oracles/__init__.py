"""Exact oracles that prove the math: Gaussian data, Gaussian mixtures, a linear-Gaussian AR
process. Every path in vidnoise is linear in (x0, eps), so for Gaussian data the posterior
mean, the velocity and every covariance can be computed exactly, with no sampling.

Names are resolved lazily from the submodules ``gaussian``, ``mixture`` and ``ar``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "powerlaw_cov": "gaussian",
    "GaussianData": "gaussian",
    "exact_stage_velocity": "gaussian",
    "GaussianMixture": "mixture",
    "LinearGaussianAR": "ar",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'vidnoise.oracles' has no attribute {name!r}")


def __dir__():
    return __all__
