"""Pyramidal training inputs: ``PyramidSchedule.training_inputs`` against the reference.

The reference is Pyramid-Flow's training path rebuilt from its description, shared with the
tests (``tests/_reference_pyramid_flow.py``: ``get_pyramid_latent`` + ``add_pyramid_noise``
with the scheduler's tables computed by numpy). Both get the same noise and the same u
(sample ``b`` gets ``u[b]``), the outputs are compared, and three things are timed in the
same run, interleaved in rotating order (median and best of the repeats): the reference,
``training_inputs`` (its fused fast path) and ``training_inputs`` with the plain formula
lines of ``stage_inputs``. Prints a markdown table.

    PYTHONPATH=src python benchmarks/bench_pyramid.py [--repeats 7] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import vidnoise.pyramid as pyramid_module
from vidnoise.pyramid import PyramidSchedule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _reference_pyramid_flow import (  # noqa: E402
    fixed_u,
    per_sample_generators,
    reference_tables,
    reference_training_inputs,
)

SHARES = (1, 2, 1)


def ours(latents, noise, u, sch, gens, fused=True):
    pyramid_module._FUSED = fused
    try:
        return sch.training_inputs(latents, stage_shares=SHARES, noise=noise, generator=gens,
                                   u_sampler=fixed_u(u))
    finally:
        pyramid_module._FUSED = True


def _max_diff(ref, mine):
    """Largest |difference| of noisy and target, sample by sample."""
    worst = 0.0
    for batch in mine:
        for j, b in enumerate(batch.indices.tolist()):
            noisy, _, _, tgt = ref.sample(b)
            worst = max(worst, float((batch.noisy[j].float() - noisy.float()).abs().max()),
                        float((batch.target[j].float() - tgt.float()).abs().max()))
    return worst


def _once(fn, sync):
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sch = PyramidSchedule()
    tables = reference_tables(3)
    cases = [
        ("image 16x16x1x128x128 fp32", (16, 16, 1, 128, 128), torch.float32),
        ("video 4x16x8x48x64 fp32", (4, 16, 8, 48, 64), torch.float32),
        ("video 4x16x16x64x96 fp32", (4, 16, 16, 64, 96), torch.float32),
        ("video 4x16x16x64x96 bf16", (4, 16, 16, 64, 96), torch.bfloat16),
    ]
    print(f"device: {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.repeats} interleaved repeats, stage_shares {SHARES}\n")
    print("| case | reference ms (median / best) | training_inputs ms (median / best) "
          "| speed-up (median / best) | plain formula lines ms (median) | fused / plain "
          "| max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, shape, dtype in cases:
        g = torch.Generator().manual_seed(0)
        lat = torch.randn(shape, generator=g).to(dev, dtype)
        noise = torch.randn(shape, generator=g).to(dev, dtype)
        u = torch.rand(shape[0], generator=g)
        gens = per_sample_generators(shape[0])
        ref = reference_training_inputs(lat, noise, u, tables, SHARES)
        diff = max(_max_diff(ref, ours(lat, noise, u, sch, gens)),
                   _max_diff(ref, ours(lat, noise, u, sch, gens, fused=False)))
        a = (lat, noise, u)
        runs = {
            "ref": lambda a=a: reference_training_inputs(*a, tables, SHARES),
            "fused": lambda a=a, g=gens: ours(*a, sch, g),
            "plain": lambda a=a, g=gens: ours(*a, sch, g, fused=False),
        }
        t = {key: [] for key in runs}
        keys = list(runs)
        for i in range(args.repeats):  # interleaved, order rotated: shares the machine's drift
            for key in keys[i % 3:] + keys[:i % 3]:
                t[key].append(_once(runs[key], sync))
        med = {key: statistics.median(v) * 1e3 for key, v in t.items()}
        best = {key: min(v) * 1e3 for key, v in t.items()}
        print(f"| {name} | {med['ref']:.1f} / {best['ref']:.1f} | {med['fused']:.1f} / "
              f"{best['fused']:.1f} | {med['ref'] / med['fused']:.2f}x / "
              f"{best['ref'] / best['fused']:.2f}x | {med['plain']:.1f} | "
              f"{med['fused'] / med['plain']:.2f} | {diff:.1e} |")
        assert math.isfinite(diff)


if __name__ == "__main__":
    main()
