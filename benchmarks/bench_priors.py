"""Keyed noise and the video noise priors against torch.randn of the same size, and the
FreeInit filter build against diffusers' triple loop.

    python benchmarks/bench_priors.py [--rounds 7] [--threads 2]

Every method is timed round-robin (one call of each per round) and the medians are
compared; wall time and process CPU time (all threads) are both reported, since on a shared
host wall time also measures waiting for a core.
"""

from __future__ import annotations

import argparse
import math

import torch

from _timing import bench_args, interleaved
from vidnoise.noise import keyed_randn
from vidnoise.priors import (
    freeinit,
    freeinit_filter,
    freenoise,
    mixed_noise,
    progressive_noise,
    warp_noise,
)

SHAPE = (1, 16, 31, 96, 160)


def fmt(s: float) -> str:
    return f"{s * 1e3:9.1f} ms" if s >= 1e-3 else f"{s * 1e6:9.1f} us"


def table(title: str, res: dict, floor: str) -> None:
    fw, fc = res[floor].wall, res[floor].cpu
    print(f"\n## {title}")
    print("| method | wall | x floor (wall) | CPU | x floor (CPU) |")
    print("|---|---:|---:|---:|---:|")
    for name, t in res.items():
        w, c = t.wall, t.cpu
        print(f"| {name} | {fmt(w)} | {w / fw:6.2f}x | {fmt(c)} | {c / fc:6.2f}x |")


def diffusers_filter_loop(shape, ds=0.25, dt=0.25, order=4):
    """A faithful copy of diffusers' FreeInitMixin._get_free_init_freq_filter (butterworth)."""
    time_, height, width = shape[-3], shape[-2], shape[-1]
    mask = torch.zeros(shape)
    for t in range(time_):
        for h in range(height):
            for w in range(width):
                d_square = (
                    ((ds / dt) * (2 * t / time_ - 1)) ** 2
                    + (2 * h / height - 1) ** 2
                    + (2 * w / width - 1) ** 2
                )
                mask[..., t, h, w] = 1 / (1 + (d_square / ds**2) ** order)
    return mask


def _apply(z_t, z_rand, filt):
    """diffusers' FreeInitMixin._apply_freq_filter (fftn, mix, ifftn .real), when installed."""
    try:
        from diffusers.pipelines.free_init_utils import FreeInitMixin
    except ImportError:  # pragma: no cover
        return None
    return FreeInitMixin._apply_freq_filter(None, z_t, z_rand, filt)


def main() -> None:
    args = bench_args(argparse.ArgumentParser(), rounds=7, threads=2)
    print(f"device: cpu, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.rounds} interleaved rounds, medians")
    g = torch.Generator().manual_seed(0)
    n = math.prod(SHAPE)

    res = interleaved({
        "torch.randn (floor)": lambda: torch.randn(SHAPE, generator=g),
        "keyed_randn": lambda: keyed_randn(SHAPE, seed=1),
        "keyed_randn, odd origin (copy)": lambda: keyed_randn(SHAPE, seed=1,
                                                              origin=(0, 0, 0, 0, 1)),
    }, args.rounds)
    table(f"keyed noise {SHAPE}: {n:,} elements", res, "torch.randn (floor)")

    noise = torch.randn(SHAPE, generator=g)
    x0 = torch.randn(SHAPE, generator=g)
    filt = freeinit_filter(SHAPE)
    frame = noise[:, :, 0]
    yy, xx = torch.meshgrid(torch.arange(96.0) - 48, torch.arange(160.0) - 80, indexing="ij")
    a = 0.03
    flow = torch.stack([xx * (math.cos(a) - 1) - yy * math.sin(a),
                        xx * math.sin(a) + yy * (math.cos(a) - 1)])[None]

    def clip(k):
        cur = frame
        for _ in range(SHAPE[2] - 1):
            cur = warp_noise(cur, flow, subpixels=k, generator=g)
        return cur

    res = interleaved({
        "torch.randn (floor)": lambda: torch.randn(SHAPE, generator=g),
        "mixed_noise": lambda: mixed_noise(SHAPE, 1.0, generator=g),
        "progressive_noise": lambda: progressive_noise(SHAPE, 1.0, generator=g),
        "freenoise (window 16, stride 4; given noise)": lambda: freenoise(noise, 16, 4,
                                                                          generator=g),
        "freeinit (given x0, noise; filter built)": lambda: freeinit(x0, noise, 0.95,
                                                                     filter=filt, generator=g),
        "diffusers _apply_freq_filter (given z_t, z_rand; no draw)": lambda: _apply(
            noise, x0, filt),
        "freeinit_filter": lambda: freeinit_filter(SHAPE),
        "warp_noise clip, 30 warps, k=4": lambda: clip(4),
        "warp_noise clip, 30 warps, k=2": lambda: clip(2),
    }, max(3, args.rounds // 2))
    table(f"priors at {SHAPE}", res, "torch.randn (floor)")

    fshape = (1, 16, 21, 60, 104)
    res = interleaved({
        "diffusers triple loop (faithful copy)": lambda: diffusers_filter_loop(fshape),
        "freeinit_filter": lambda: freeinit_filter(fshape),
    }, 3)
    table(f"FreeInit filter build at {fshape[1:]}", res, "freeinit_filter")
    ref = diffusers_filter_loop(fshape)
    diff = float((freeinit_filter(fshape).expand(fshape) - ref).abs().max())
    print(f"max |freeinit_filter - loop| at this (odd T = 21) shape: {diff:.2e} "
          f"(the loop's grid is off by 1/T on T)")


if __name__ == "__main__":
    main()
