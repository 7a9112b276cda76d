"""Per-frame sampler overhead and schedule build cost, side by side in one run.

* ``sample_frames`` against ``sample_flow`` at the same shape and step count with a model
  that returns a precomputed tensor (only the samplers' own work is timed): equal columns
  (every frame changes every step), and a diffusion-forcing pyramid (frames at different
  levels; some frames unchanged per step) against the same number of ``sample_flow`` steps.
  Medians of interleaved repeats (the machine is shared).
* Building a 1,000-frame schedule: ``diffusion_forcing_matrix`` + ``level_sigmas``,
  ``skyreels_matrix``, ``fifo_schedule(...).unroll`` and ``chunk_schedule(...).unroll``.

    PYTHONPATH=src python benchmarks/bench_frames.py [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from _timing import bench_args, interleaved
from vidnoise.frames import (
    chunk_schedule,
    diffusion_forcing_matrix,
    fifo_schedule,
    level_sigmas,
    sample_frames,
    skyreels_matrix,
)
from vidnoise.samplers import sample_flow

SHAPES = ((1, 16, 8, 32, 32), (1, 16, 8, 8, 8))
STEPS = 32


def bench_sampler(shape, repeats):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(shape, generator=g)
    v = torch.randn(shape, generator=g)
    t = shape[2]
    grid = [1.0 - i / STEPS for i in range(STEPS)] + [0.0]
    equal = [[s] * t for s in grid]
    k = STEPS - t + 1  # pyramid with the same number of steps as the flat grid
    pyr = level_sigmas(diffusion_forcing_matrix(t, k), [1.0 - i / k for i in range(k)] + [0.0])

    def model(x, sigma):
        return v

    res = interleaved({
        "flow": lambda: sample_flow(model, noise, grid),
        "frames_equal": lambda: sample_frames(model, noise, equal),
        "frames_pyramid": lambda: sample_frames(model, noise, pyr),
        "flow_heun": lambda: sample_flow(model, noise, grid, solver="heun"),
        "frames_equal_heun": lambda: sample_frames(model, noise, equal, solver="heun"),
    }, repeats)
    assert pyr.shape[0] - 1 == STEPS
    return {k: t.wall / STEPS for k, t in res.items()}


def bench_build(repeats):
    tmpl = torch.linspace(1000, 20, 50).long()
    grid = [1.0 - i / 50 for i in range(50)] + [0.0]
    res = interleaved({
        "df_matrix": lambda: diffusion_forcing_matrix(1000, 50),
        "df_matrix(grid=)": lambda: diffusion_forcing_matrix(1000, 50, grid=grid),
        "df_matrix+level_sigmas": lambda: level_sigmas(diffusion_forcing_matrix(1000, 50), grid),
        # floor: writing one (rows, 1000) float64 / int64 matrix of the sizes built above
        "floor: full(1050x1000) f64": lambda: torch.full((1050, 1000), 1.0, dtype=torch.float64),
        "floor: full(1443x1000) i64": lambda: torch.full((1443, 1000), 1, dtype=torch.int64),
        "skyreels": lambda: skyreels_matrix(1000, tmpl, 40, ar_step=7, causal_block_size=5),
        "fifo.unroll": lambda: fifo_schedule(grid, 10).unroll(1000),
        "chunk.unroll": lambda: chunk_schedule([1.0, 0.75, 0.5, 0.25], 4, context=8,
                                               shift=5.0).unroll(1000),
    }, repeats)
    return {k: t.wall for k, t in res.items()}


def main():
    args = bench_args(argparse.ArgumentParser(), rounds=15, threads=1, flag="--repeats")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {STEPS} steps, medians of "
          f"{args.repeats} interleaved repeats")
    for shape in SHAPES:
        r = bench_sampler(shape, args.repeats)
        f = r["flow"]
        print(f"{shape}: per step  sample_flow euler {f * 1e6:8.1f} us | sample_frames equal "
              f"{r['frames_equal'] * 1e6:8.1f} us ({r['frames_equal'] / f:.2f}x) | pyramid "
              f"{r['frames_pyramid'] * 1e6:8.1f} us ({r['frames_pyramid'] / f:.2f}x) | heun "
              f"flow {r['flow_heun'] * 1e6:8.1f} us, frames {r['frames_equal_heun'] * 1e6:8.1f}"
              f" us ({r['frames_equal_heun'] / r['flow_heun']:.2f}x)")
    for k, val in bench_build(max(3, args.repeats // 3)).items():
        print(f"1,000-frame schedule {k:18s} {val * 1e3:8.2f} ms")
    try:  # the reference: diffusers' row-by-row loop (seconds: timed once)
        from diffusers import SkyReelsV2DiffusionForcingPipeline as Sky
    except ImportError:
        return
    tmpl = torch.linspace(1000, 20, 50).long()
    t0 = time.perf_counter()
    Sky.generate_timestep_matrix(None, 1000, tmpl, 40, 7, 0, 5, False)
    t1 = time.perf_counter()
    skyreels_matrix(1000, tmpl, 40, ar_step=7, causal_block_size=5)
    t2 = time.perf_counter()
    print(f"1,000-frame SkyReels: diffusers generate_timestep_matrix {(t1 - t0) * 1e3:.0f} ms, "
          f"skyreels_matrix {(t2 - t1) * 1e3:.1f} ms (one run each)")


if __name__ == "__main__":
    main()
