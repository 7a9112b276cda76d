"""Exact oracles that prove the math (docs/math.md §9): Gaussian data, Gaussian mixtures, a
linear-Gaussian AR process. Every path in vidnoise is linear in (x0, ε), so for Gaussian data
the posterior mean, the velocity and every covariance can be computed exactly, with no
sampling.
"""

from __future__ import annotations

from vidnoise.oracles.ar import LinearGaussianAR
from vidnoise.oracles.frames import FrameGaussian, ar_frame_cov
from vidnoise.oracles.gaussian import (
    GaussianData,
    StageVelocity,
    exact_pyramid_model,
    exact_stage_velocity,
    powerlaw_cov,
    pyramid_operators,
)
from vidnoise.oracles.mixture import GaussianMixture

__all__ = [
    "FrameGaussian",
    "GaussianData",
    "GaussianMixture",
    "LinearGaussianAR",
    "StageVelocity",
    "ar_frame_cov",
    "exact_pyramid_model",
    "exact_stage_velocity",
    "powerlaw_cov",
    "pyramid_operators",
]
