"""Per-step overhead of a 64-step flow Euler loop: vidnoise.samplers.sample_flow against a
diffusers FlowMatchEulerDiscreteScheduler ``set_timesteps`` + ``step`` loop, in the same run.

The model returns a precomputed tensor, so only each sampler's own work is timed. Also
shows that the whole sample_flow loop compiles with ``torch.compile(fullgraph=True)`` on
CPU (a host sync such as ``.item()`` would be a graph break, which fullgraph rejects).

    .venv/bin/python benchmarks/bench_samplers.py [--repeats 30] [--threads 1] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidnoise.samplers import sample_flow

SHAPES = ((1, 16, 8, 32, 32), (1, 16, 1, 8, 8))
STEPS = 64


def _time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs, after 3 warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_shape(shape, repeats: int):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(shape, generator=g)
    v = torch.randn(shape, generator=g)
    grid = [1.0 - i / STEPS for i in range(STEPS)] + [0.0]

    def model(x, sigma):  # precomputed velocity: the sampler's own work only
        return v

    ours = _time(lambda: sample_flow(model, noise, grid), repeats)
    buf = noise.clone()

    def floor_loop():  # the least any Euler loop must do: one in-place x += h·v per step
        for i in range(STEPS):
            buf.add_(v, alpha=grid[i + 1] - grid[i])

    floor = _time(floor_loop, repeats)
    row = dict(shape=shape, ours=ours / STEPS, floor=floor / STEPS)
    try:
        from diffusers import FlowMatchEulerDiscreteScheduler
    except ImportError:
        row["diffusers"] = None
        return row
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)

    def diffusers_loop():
        sched.set_timesteps(sigmas=grid[:-1])
        x = noise
        for t in sched.timesteps:
            x = sched.step(model(x, t), t, x, return_dict=False)[0]
        return x

    ref = _time(diffusers_loop, repeats)
    row["diffusers"] = ref / STEPS
    torch.testing.assert_close(sample_flow(model, noise, grid), diffusers_loop(),
                               rtol=0, atol=1e-5)
    return row


def compile_check() -> str:
    """Compile the whole 64-step sample_flow loop with fullgraph=True (inductor, CPU)."""
    shape = SHAPES[1]
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(shape, generator=g)
    w = torch.randn(shape, generator=g)
    grid = [1.0 - i / STEPS for i in range(STEPS)] + [0.0]

    def model(x, sigma):  # a model with real tensor work, traced into the graph
        return torch.tanh(x) * w + sigma.reshape(-1, 1, 1, 1, 1)

    torch._dynamo.reset()
    fn = torch.compile(lambda z: sample_flow(model, z, grid), fullgraph=True)
    t0 = time.perf_counter()
    out = fn(noise)
    t_compile = time.perf_counter() - t0
    torch.testing.assert_close(out, sample_flow(model, noise, grid), rtol=1e-4, atol=1e-4)
    return (f"torch.compile(fullgraph=True) of the 64-step sample_flow loop on {shape}: "
            f"compiled and ran in {t_compile:.1f} s, no graph break, output matches eager "
            f"(torch {torch.__version__})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {STEPS} Euler steps, "
          f"median of {args.repeats} runs, float32 on CPU")
    print("| shape | vidnoise µs/step | diffusers µs/step | ratio (target <= 0.33) "
          "| bare x.add_(v) µs/step | floor / diffusers |")
    print("|---|---|---|---|---|---|")
    for shape in SHAPES:
        r = bench_shape(shape, args.repeats)
        if r["diffusers"] is None:
            print(f"| {shape} | {r['ours'] * 1e6:.1f} | (diffusers not installed) | - "
                  f"| {r['floor'] * 1e6:.1f} | - |")
        else:
            ratio = r["ours"] / r["diffusers"]
            print(f"| {shape} | {r['ours'] * 1e6:.1f} | {r['diffusers'] * 1e6:.1f} "
                  f"| {ratio:.2f} | {r['floor'] * 1e6:.1f} | {r['floor'] / r['diffusers']:.2f} |")
    if not args.no_compile:
        print(compile_check())


if __name__ == "__main__":
    main()
