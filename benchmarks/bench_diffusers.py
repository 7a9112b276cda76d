"""FlowScheduler.step against diffusers' FlowMatchEulerDiscreteScheduler.step, side by side.

A zero-cost model (a fixed output tensor) on a Wan 480p latent (1, 16, 21, 60, 104) float32;
the time of a full loop of ``steps`` scheduler steps per repeat, interleaved (ours, theirs,
ours, ...), medians over ``repeats``. Also the floor: one ``torch.add`` of the same size.

    PYTHONPATH=src python benchmarks/bench_diffusers.py [--steps 20] [--repeats 15]
"""

from __future__ import annotations

import argparse

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from _timing import interleaved
from vidnoise.diffusers import FlowScheduler


def loop(sched, x, out, steps):
    sched.set_timesteps(steps)
    sched.set_begin_index(0)
    for t in sched.timesteps:
        x = sched.step(out, t, x, return_dict=False)[0]
    return x


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--shape", type=int, nargs="+", default=[1, 16, 21, 60, 104])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(a.shape, generator=g, device=dev)
    out = torch.randn(a.shape, generator=g, device=dev)
    ours, theirs = FlowScheduler(shift=5.0), FlowMatchEulerDiscreteScheduler(shift=5.0)

    def floor():
        y = x
        for _ in range(a.steps):
            y = torch.add(y, out, alpha=-0.01)

    res = interleaved({
        "vidnoise FlowScheduler.step": lambda: loop(ours, x, out, a.steps),
        "diffusers FlowMatchEuler.step": lambda: loop(theirs, x, out, a.steps),
        "floor (torch.add)": floor,
    }, a.repeats, warmup=2, device=dev)
    med = {k: t.wall / a.steps for k, t in res.items()}
    ref = med["diffusers FlowMatchEuler.step"]
    print(f"shape {tuple(a.shape)} float32 on {dev}, {a.steps} steps, {a.repeats} interleaved "
          f"repeats (median per step)")
    for k, v in med.items():
        print(f"  {k:32s} {v * 1e3:8.3f} ms   {v / ref:5.2f}x diffusers")
    # same result
    d = (loop(ours, x, out, a.steps) - loop(theirs, x, out, a.steps)).abs().max().item()
    print(f"  max |ours - diffusers| after the loop: {d:.3g}")
    return med


if __name__ == "__main__":
    main()
