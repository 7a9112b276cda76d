"""Samplers in the k-diffusion shape: plain functions whose loop reads like the algorithm.

* :func:`sample_flow`  (flow Euler / Heun / midpoint, ``model(x, sigma) -> v = eps - x0``)
* :func:`sample_edm`   (EDM Algorithm 2 with churn and an initial-noise policy)
* :func:`sample_pyramid` (Pyramid-Flow's pyramidal flow sampler with stage jumps)
* :func:`rollout`      (autoregressive generation with conditioning-frame noise)
* :func:`cfg`, :func:`dynamic_cfg` (classifier-free guidance)

Every sampler runs without an autograd graph unless called with ``grad=True``.
"""

from __future__ import annotations

from vidnoise.samplers.autoregressive import rollout
from vidnoise.samplers.edm import sample_edm
from vidnoise.samplers.flow import sample_flow
from vidnoise.samplers.guidance import cfg, dynamic_cfg
from vidnoise.samplers.pyramid import sample_pyramid

__all__ = ["cfg", "dynamic_cfg", "rollout", "sample_edm", "sample_flow", "sample_pyramid"]
