"""Keyed block noise (the renoising noise of a sharded pyramidal sample) against block noise
from a torch.Generator and against torch.randn of the same size.

    python benchmarks/bench_keyed_pyramid.py [--rounds 9] [--threads 1]

Round-robin timing (one call of each method per round), medians compared; wall time and
process CPU time are both reported (on a shared host wall time also measures waiting).
Each call allocates fresh 23-30 MB buffers, and whether glibc hands back pages that must be
faulted in again changes a call by 10-25 ms; for the compute-only ratio run it with
``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296`` in the environment.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidnoise.noise import NoiseKey, block_noise, keyed_randn

SHAPE = (1, 16, 31, 96, 160)


def race(methods: dict, rounds: int) -> dict:
    for fn in methods.values():  # warm-up
        fn()
    res = {name: ([], []) for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            res[name][0].append(time.perf_counter() - w0)
            res[name][1].append(time.process_time() - c0)
    return {n: (statistics.median(w), statistics.median(c)) for n, (w, c) in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    key = NoiseKey(0)
    methods = {
        "torch.randn": lambda: torch.randn(SHAPE, generator=g),
        "block_noise, generator (γ=1/3)": lambda: block_noise(SHAPE, generator=g),
        "block_noise, NoiseKey (γ=1/3)": lambda: block_noise(SHAPE, generator=key),
        "keyed_randn": lambda: keyed_randn(SHAPE, seed=0),
        "block_noise, generator (γ=0.2)": lambda: block_noise(SHAPE, gamma=0.2, generator=g),
        "block_noise, NoiseKey (γ=0.2)": lambda: block_noise(SHAPE, gamma=0.2, generator=key),
    }
    res = race(methods, args.rounds)
    fw, fc = res["torch.randn"]
    gw, gc = res["block_noise, generator (γ=1/3)"]
    print(f"## {SHAPE}, {args.threads} thread(s), median of {args.rounds} interleaved rounds")
    print("| method | wall | x randn | x generator | CPU | x randn |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (w, c) in res.items():
        base = res[name.replace("NoiseKey", "generator")][0] if "block" in name else gw
        print(f"| {name} | {w * 1e3:.1f} ms | {w / fw:.2f}x | {w / base:.2f}x | "
              f"{c * 1e3:.1f} ms | {c / fc:.2f}x |")


if __name__ == "__main__":
    main()
