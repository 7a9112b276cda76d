"""Block noise and noise pyramids against the reference behaviour and the torch.randn floor.

Prints one table per shape, every row timed in the same run (median of round-robin repeats):

1. reference: Pyramid-Flow's sampler rebuilt from its description: one
   ``MultivariateNormal(0, (1+γ)I - γ11ᵀ)``, ``dist.sample()`` once per 2x2 block in a
   Python loop, stacked and rearranged (timed on a few thousand blocks, scaled per block);
2. ``MultivariateNormal.sample((n,))`` vectorised, then rearranged;
3. naive closed form: ``z = randn``, block mean ``b``, ``sqrt(1+γ)(z-b) + sqrt(1-3γ)b``;
4. ``torch.randn`` of the same number of elements (the floor);
5. ``vidnoise.block_noise``;
6. ``vidnoise.noise_pyramid`` (3 levels, on given noise; bilinear, whose exact 2x levels are
   one ``avg_pool2d`` each, and bicubic, normalised by the composed operator's row norms,
   docs/math.md §2) and ``randn + noise_pyramid``, against ``torch.randn`` of the finest
   level.

Usage: ``python benchmarks/bench_noise.py [--quick] [--device cuda] [--compile]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import vidnoise as vn

SHAPES = {
    "768p stage 1 (1,16,1,48,80)": (1, 16, 1, 48, 80),
    "768p stage 2 (1,16,1,96,160)": (1, 16, 1, 96, 160),
    "31-frame clip (1,16,31,96,160)": (1, 16, 31, 96, 160),
}
QUICK_SHAPES = {"quick (1,4,2,16,16)": (1, 4, 2, 16, 16)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict, device, repeats: int) -> dict:
    """Median time of each function, timed round-robin (one call of each per round) so that
    every method sees the same allocator and cache state."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def block_cov(gamma: float) -> torch.Tensor:
    return (1 + gamma) * torch.eye(4) - gamma * torch.ones(4, 4)


def make_dist(gamma: float, device):
    """The reference's MultivariateNormal; its Cholesky of the singular γ = 1/3 covariance
    can fail, in which case a 1e-6 jitter is added (noted in the output)."""
    try:
        return torch.distributions.MultivariateNormal(
            torch.zeros(4, device=device), covariance_matrix=block_cov(gamma).to(device)
        ), ""
    except (ValueError, RuntimeError) as err:  # singular covariance
        cov = block_cov(gamma) + 1e-6 * torch.eye(4)
        note = f"(Cholesky failed: {str(err).splitlines()[0][:60]}...; 1e-6 jitter)"
        return torch.distributions.MultivariateNormal(
            torch.zeros(4, device=device), covariance_matrix=cov.to(device)
        ), note


def rearrange_blocks(blocks: torch.Tensor, shape) -> torch.Tensor:
    """(n_blocks, 4) in (b c t h w) order -> (b, c, t, 2h, 2w) as the reference's rearrange."""
    b, c, t, h, w = shape
    x = blocks.reshape(b, c, t, h // 2, w // 2, 2, 2)
    return x.permute(0, 1, 2, 3, 5, 4, 6).reshape(shape)


def reference_loop_per_block(dist, n_blocks: int) -> float:
    """Seconds per block of the reference loop, timed on ``n_blocks`` blocks."""
    t0 = time.perf_counter()
    samples = [dist.sample() for _ in range(n_blocks)]
    torch.stack(samples)
    return (time.perf_counter() - t0) / n_blocks


def naive_closed_form(shape, gamma, device):
    z = torch.randn(shape, device=device)
    b, c, t, h, w = shape
    v = z.view(b, c, t, h // 2, 2, w // 2, 2)
    mean = v.mean(dim=(4, 6), keepdim=True)
    return (math.sqrt(1 + gamma) * (v - mean) + math.sqrt(1 - 3 * gamma) * mean).view(shape)


def run(
    shapes, device, loop_blocks: int, compile_: bool = False, repeats: int = 15
) -> list[dict]:
    gamma = 1 / 3
    dist, note = make_dist(gamma, device)
    per_block = reference_loop_per_block(dist, loop_blocks)
    bn = vn.block_noise
    if compile_:
        bn = torch.compile(vn.block_noise)
    rows = []
    for label, shape in shapes.items():
        numel = math.prod(shape)
        n_blocks = numel // 4
        noise = torch.randn(shape, device=device)
        fns = {
            "randn": lambda s=shape: torch.randn(s, device=device),
            "block": lambda s=shape: bn(s, gamma=gamma, device=device),
            "mvn": lambda s=shape, n=n_blocks: rearrange_blocks(dist.sample((n,)), s),
            "naive": lambda s=shape: naive_closed_form(s, gamma, device),
            "pyramid": lambda x=noise: vn.noise_pyramid(x, 3),
            "pyramid_bicubic": lambda x=noise: vn.noise_pyramid(x, 3, mode="bicubic"),
            "randn_pyramid": lambda s=shape: vn.noise_pyramid(
                torch.randn(s, device=device), 3
            ),
        }
        times = interleaved(fns, device, repeats)
        rows.append(
            dict(label=label, numel=numel, blocks=n_blocks, loop=per_block * n_blocks, **times)
        )
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}"
          f"{', block_noise compiled' if compile_ else ''}")
    print(f"reference loop: {per_block * 1e6:.1f} us per block (timed on {loop_blocks} blocks)"
          f" {note}")
    for r in rows:
        print()
        print(f"## {r['label']}: {r['numel']:,} elements, {r['blocks']:,} 2x2 blocks")
        print(f"| {'method':<44} | {'time':>11} | {'x randn':>9} |")
        print(f"|{'-' * 46}|{'-' * 13}|{'-' * 11}|")
        for key, name in (
            ("loop", "reference: MVN.sample() per block, Python loop"),
            ("mvn", "MultivariateNormal.sample((n,)) vectorised"),
            ("naive", "naive closed form (randn, block mean, combine)"),
            ("randn", "torch.randn (floor)"),
            ("block", "vidnoise.block_noise"),
            ("pyramid", "vidnoise.noise_pyramid, 3 levels"),
            ("pyramid_bicubic", "vidnoise.noise_pyramid, 3 levels, bicubic"),
            ("randn_pyramid", "torch.randn + noise_pyramid, 3 levels"),
        ):
            t = r[key]
            print(f"| {name:<44} | {_fmt(t):>11} | {t / r['randn']:>8.2f}x |")
        print(f"reference loop / block_noise: {r['loop'] / r['block']:,.0f}x")
    return rows


def _fmt(t: float) -> str:
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} us"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (smoke test)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile block_noise")
    ap.add_argument("--loop-blocks", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    loop_blocks = 50 if args.quick else args.loop_blocks
    repeats = 3 if args.quick else args.repeats
    return run(shapes, torch.device(args.device), loop_blocks, args.compile, repeats)


if __name__ == "__main__":
    main()
