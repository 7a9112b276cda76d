"""The benchmarks' one timing loop: callables timed round-robin, medians compared.

On a shared host a method timed in a block of its own meets other load than the next one;
interleaving (one call of each per round) gives every method the same conditions, and the
median ignores the rounds a neighbour's burst spoiled.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Median seconds of one method: ``wall`` (perf_counter) and ``cpu`` (process CPU time,
    all threads; on a shared host wall time also measures waiting for a core)."""

    wall: float
    cpu: float


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, *, warmup: int = 1, device=None
) -> dict[str, Timing]:
    """Median :class:`Timing` of each callable over ``rounds`` rounds, one call of each per
    round in ``fns``'s order, after ``warmup`` untimed rounds. On a CUDA ``device`` each
    timed call is bracketed by ``torch.cuda.synchronize``."""
    sync = torch.cuda.synchronize if torch.device(device or "cpu").type == "cuda" else None
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    walls = {name: [] for name in fns}
    cpus = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if sync is not None:
                sync()
            c0 = time.process_time()
            w0 = time.perf_counter()  # the wall bracket holds only fn (and the sync after it)
            fn()
            if sync is not None:
                sync()
            walls[name].append(time.perf_counter() - w0)
            cpus[name].append(time.process_time() - c0)
    return {
        name: Timing(statistics.median(walls[name]), statistics.median(cpus[name]))
        for name in fns
    }


def bench_args(
    ap: argparse.ArgumentParser, *, rounds: int, threads: int, flag: str = "--rounds", argv=None
) -> argparse.Namespace:
    """Add the options every benchmark has to ``ap`` (``flag``: the interleaved rounds,
    default ``rounds``; ``--threads``: torch's CPU thread count, default ``threads``), parse
    ``argv`` (None: the command line) and set torch's thread count."""
    ap.add_argument(flag, type=int, default=rounds)
    ap.add_argument("--threads", type=int, default=threads)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args
