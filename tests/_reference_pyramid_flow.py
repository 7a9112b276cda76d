"""Pyramid-Flow's training-input path rebuilt from its description, independently of vidnoise.

Used by tests/test_pyramid.py and benchmarks/bench_pyramid.py (which puts tests/ on its
path). Nothing here imports vidnoise: the scheduler's tables are computed with numpy, the
inputs with the reference's own operations.

* :func:`reference_tables`: the reference scheduler's initialisation (float32 σ grid,
  shifted; σ read at ``int(stage_range·N)``; start corrected with
  ``1/(sqrt(1+1/γ)(1-e)+e)·e``; time slices by cumulative stage length; per-stage training
  timesteps ``linspace(τ[int(a·N)], τ[min(int(b·N), N-1)], N+1)[:-1]``; ratios
  ``linspace(1, 0, N+1)[:-1]``).
* :func:`reference_training_inputs`: ``get_pyramid_latent`` (bilinear latent pyramid of the
  whole batch, frames moved into the batch with a copy) then ``add_pyramid_noise`` (noise
  pyramid by ``interpolate(..., bilinear) * 2``, one loop iteration per batch column
  ``index::S``, nearest upsampling through interpolate, float64 ratios promoting the
  interpolation, a cast back). u is given per sample, as a (B,) tensor: sample ``b`` uses
  ``u[b]``.
* :func:`fixed_u` / :func:`per_sample_generators`: feed those same u to vidnoise's
  ``training_inputs`` with no state: generator ``b`` is seeded with ``b`` and the sampler
  returns ``u[seed]`` for each generator it is handed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ReferenceTables:
    ori_start: tuple
    start: tuple
    end: tuple
    slices: tuple
    timesteps: tuple  # per stage, (N,) float64 numpy: training timestep of grid index j
    ratios: np.ndarray  # (N,) float64: local ratio of grid index j, 1 - j/N


def reference_tables(stages, stage_range=None, gamma=1 / 3, shift=1.0, N=1000):
    if stage_range is None:
        stage_range = [i / stages for i in range(stages + 1)]
    t = np.linspace(1, N, N, dtype=np.float32)[::-1].copy()
    sig = t / np.float32(N)
    sig = (np.float32(shift) * sig / (np.float32(1) + np.float32(shift - 1) * sig)).astype(
        np.float32)
    tau = (sig * np.float32(N)).astype(np.float32)
    ori, start, end, dist = [], [], [], []
    for k in range(stages):
        i0 = max(int(stage_range[k] * N), 0)
        i1 = min(int(stage_range[k + 1] * N), N)
        s = float(sig[i0])
        e = float(sig[i1]) if i1 < N else 0.0
        ori.append(s)
        if k:
            o = 1 - s
            s = 1 - (1 / (math.sqrt(1 + 1 / gamma) * (1 - o) + o)) * o
        start.append(s)
        end.append(e)
        dist.append(s - e)
    tot = sum(dist)
    slices = []
    for k in range(stages):
        a = 0.0 if k == 0 else sum(dist[:k]) / tot
        b = 1.0 if k == stages - 1 else sum(dist[: k + 1]) / tot
        slices.append((a, b))
    ts = []
    for a, b in slices:
        tmax = float(tau[int(a * N)])
        tmin = float(tau[min(int(b * N), N - 1)])
        ts.append(np.linspace(tmax, tmin, N + 1)[:-1])
    rs = np.linspace(1, 0, N + 1)[:-1]
    return ReferenceTables(tuple(ori), tuple(start), tuple(end), tuple(slices), tuple(ts), rs)


def _to_bt(x):  # 'b c t h w -> (b t) c h w' (a copy, as einops does)
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), t


def _from_bt(x, t):  # '(b t) c h w -> b c t h w'
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


def _halve(x, factor=1.0):
    y, t = _to_bt(x)
    y = F.interpolate(y, size=(y.shape[-2] // 2, y.shape[-1] // 2), mode="bilinear") * factor
    return _from_bt(y, t)


@dataclass(frozen=True)
class ReferenceOutput:
    """Per column ``index`` of the batch (samples ``index::S``): lists indexed by column."""

    noisy: list
    ratio: list
    timestep: list
    target: list
    columns: int

    def sample(self, b: int):
        """``(noisy, ratio, timestep, target)`` of batch sample ``b``."""
        c, j = b % self.columns, b // self.columns
        return self.noisy[c][j], self.ratio[c][j], self.timestep[c][j], self.target[c][j]


def reference_training_inputs(latents, noise, u, tables, stage_shares):
    """``get_pyramid_latent`` + ``add_pyramid_noise`` on (B, C, T, H, W) ``latents`` and
    ``noise`` with per-sample ``u`` (B,)."""
    K = len(tables.start)
    N = len(tables.ratios)
    lat_list, noise_list = [latents], [noise]
    for _ in range(K - 1):
        lat_list.append(_halve(lat_list[-1]))
        noise_list.append(_halve(noise_list[-1], 2.0))
    lat_list, noise_list = lat_list[::-1], noise_list[::-1]
    S = sum(stage_shares)
    col_stage = [k for k, c in enumerate(stage_shares) for _ in range(c)]
    dtype = latents.dtype
    out = ([], [], [], [])
    for index in range(S):
        k = col_stage[index]
        clean = lat_list[k][index::S]
        s_sig, e_sig = tables.start[k], tables.end[k]
        if k == 0:
            start = noise_list[k][index::S]
        else:
            last, t = _to_bt(lat_list[k - 1][index::S])
            last = F.interpolate(last, size=(last.shape[-2] * 2, last.shape[-1] * 2),
                                 mode="nearest")
            start = s_sig * noise_list[k][index::S] + (1 - s_sig) * _from_bt(last, t)
        end = clean if k == K - 1 else e_sig * noise_list[k][index::S] + (1 - e_sig) * clean
        idx = (u[index::S] * N).long().clamp(0, N - 1)
        timesteps = torch.from_numpy(tables.timesteps[k])[idx].to(latents.device)
        ratios = torch.from_numpy(tables.ratios)[idx].to(latents.device)
        r = ratios.reshape(-1, *([1] * (start.dim() - 1)))
        noisy = r * start + (1 - r) * end
        for lst, v in zip(out, (noisy.to(dtype), ratios, timesteps, start - end)):
            lst.append(v)
    return ReferenceOutput(*out, columns=S)


def per_sample_generators(B: int) -> list:
    """Generator ``b`` seeded with ``b`` (the key :func:`fixed_u` reads)."""
    return [torch.Generator().manual_seed(b) for b in range(B)]


def fixed_u(u):
    """A ``u_sampler`` that gives sample ``b`` the value ``u[b]``; use it with
    ``generator=per_sample_generators(B)``."""

    def sampler(n, *, generator, device=None):
        rows = [g.initial_seed() for g in generator]
        assert len(rows) == n
        return u[rows].to(device)

    return sampler
