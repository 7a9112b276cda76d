"""vidnoise: the noise side of video diffusion and flow-matching models.

Conventions (``docs/conventions.md``, ``docs/math.md`` §1):

* flow paths: ``x = (1 - sigma) * x0 + sigma * eps``, sigma in [0, 1] is the noise fraction,
  velocity ``v = eps - x0``;
* EDM / VE paths: ``x = x0 + sigma * eps``, sigma is the noise standard deviation;
* every other convention (diffusers timesteps, Mochi's target and reversed time,
  flow_matching's t, VP, Pyramid-Flow's γ sign) goes through a named converter in
  :mod:`vidnoise.conventions`.

``import vidnoise`` needs only torch and numpy. The optional parts are imported by name:
:mod:`vidnoise.diffusers` (the ``diffusers`` extra) and :mod:`vidnoise.demo` (the ``demo``
extra).
"""

from __future__ import annotations

from vidnoise import (
    conditioning,
    conventions,
    diagnostics,
    frames,
    noise,
    oracles,
    paths,
    presets,
    priors,
    pyramid,
    samplers,
    schedules,
    sigma_samplers,
)
from vidnoise.diagnostics import NoiseReport, assert_white, noise_report
from vidnoise.frames import sample_frames
from vidnoise.noise import (
    NoiseKey,
    block_noise,
    keyed_randn,
    noise_pyramid,
    rand,
    randn,
    resample_noise,
    resample_variance,
)
from vidnoise.paths import EDMPath, FlowPath, PathCoefficients, PathSample, VPPath
from vidnoise.pyramid import PyramidSchedule, StageBatch
from vidnoise.samplers import cfg, rollout, sample_edm, sample_flow, sample_pyramid

__version__ = "0.1.0"

__all__ = [
    # submodules
    "conditioning",
    "conventions",
    "diagnostics",
    "frames",
    "noise",
    "oracles",
    "paths",
    "presets",
    "priors",
    "pyramid",
    "samplers",
    "schedules",
    "sigma_samplers",
    # noise
    "NoiseKey",
    "block_noise",
    "keyed_randn",
    "noise_pyramid",
    "rand",
    "randn",
    "resample_noise",
    "resample_variance",
    # diagnostics
    "NoiseReport",
    "assert_white",
    "noise_report",
    # paths
    "EDMPath",
    "FlowPath",
    "PathCoefficients",
    "PathSample",
    "VPPath",
    # pyramidal flow
    "PyramidSchedule",
    "StageBatch",
    # samplers
    "cfg",
    "rollout",
    "sample_edm",
    "sample_flow",
    "sample_frames",
    "sample_pyramid",
]
