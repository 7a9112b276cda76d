"""Pyramidal training inputs: ``PyramidSchedule.training_inputs`` against a rebuilt reference.

The reference is Pyramid-Flow's training path rebuilt from its description (not its code):
``get_pyramid_latent`` (bilinear latent pyramid of the whole batch, frames moved into the
batch with a copy) followed by ``add_pyramid_noise`` (noise pyramid of the whole batch by
``interpolate(..., bilinear) * 2``, one loop iteration per batch column ``index::S``,
nearest upsampling through interpolate, float64 ratios promoting the interpolation, a cast
back). Both get the same noise and the same u, the outputs are compared, and both are timed
in the same run, interleaved (median and best of the repeats). Prints a markdown table.

    .venv/bin/python benchmarks/bench_pyramid.py [--repeats 7] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from vidnoise.pyramid import PyramidSchedule


# ----------------------------------------------------------------------------- reference
def _ref_tables(sch):
    """Reference scheduler tables: start/end σ and per-stage 1000-point training grids."""
    N = sch.num_train_timesteps
    ts = [torch.from_numpy(np.linspace(tmax, tmin, N + 1)[:-1])
          for tmax, tmin in sch.timestep_range]
    rs = torch.from_numpy(np.linspace(1, 0, N + 1)[:-1])
    return ts, rs


def _to_bt(x):  # 'b c t h w -> (b t) c h w'
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), t


def _from_bt(x, t):  # '(b t) c h w -> b c t h w'
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


def reference_pyramid(latents, noise, u, sch, tables, sample_ratios=(1, 2, 1)):
    K = sch.stages
    ts_tab, rs_tab = tables
    N = sch.num_train_timesteps
    # get_pyramid_latent
    lat_list = [latents]
    x = latents
    for _ in range(K - 1):
        y, t = _to_bt(x)
        y = F.interpolate(y, size=(y.shape[-2] // 2, y.shape[-1] // 2), mode="bilinear")
        x = _from_bt(y, t)
        lat_list.append(x)
    lat_list = lat_list[::-1]
    # add_pyramid_noise
    dtype = latents.dtype
    noise_list = [noise]
    cur = noise
    for _ in range(K - 1):
        y, t = _to_bt(cur)
        y = F.interpolate(y, size=(y.shape[-2] // 2, y.shape[-1] // 2), mode="bilinear") * 2
        cur = _from_bt(y, t)
        noise_list.append(cur)
    noise_list = noise_list[::-1]
    S = sum(sample_ratios)
    col_stage = [k for k, c in enumerate(sample_ratios) for _ in range(c)]
    noisy_l, ratio_l, ts_l, tgt_l = [], [], [], []
    for index in range(S):
        k = col_stage[index]
        clean = lat_list[k][index::S]
        s_sig, e_sig = sch.start_sigmas[k], sch.end_sigmas[k]
        if k == 0:
            start = noise_list[k][index::S]
        else:
            last, t = _to_bt(lat_list[k - 1][index::S])
            last = F.interpolate(last, size=(last.shape[-2] * 2, last.shape[-1] * 2),
                                 mode="nearest")
            start = s_sig * noise_list[k][index::S] + (1 - s_sig) * _from_bt(last, t)
        end = clean if k == K - 1 else e_sig * noise_list[k][index::S] + (1 - e_sig) * clean
        idx = (u[index::S] * N).long().clamp(0, N - 1)
        timesteps = ts_tab[k][idx].to(latents.device)
        ratios = rs_tab[idx].to(latents.device)
        while ratios.dim() < start.dim():
            ratios = ratios.unsqueeze(-1)
        noisy = ratios * start + (1 - ratios) * end
        noisy_l.append(noisy.to(dtype))
        ratio_l.append(ratios.to(dtype))
        ts_l.append(timesteps.to(dtype))
        tgt_l.append(start - end)
    return noisy_l, ratio_l, ts_l, tgt_l


# ----------------------------------------------------------------------------- ours
def ours(latents, noise, u, sch, sample_ratios=(1, 2, 1)):
    S = sum(sample_ratios)
    col_stage = [k for k, c in enumerate(sample_ratios) for _ in range(c)]
    B = latents.shape[0]
    rows = [[b for b in range(B) if col_stage[b % S] == k] for k in range(sch.stages)]
    it = iter([r for r in rows if r])

    def sampler(n, *, generator=None, device=None):
        return u[next(it)]

    return sch.training_inputs(latents, sample_ratios=sample_ratios, noise=noise,
                               sigma_sampler=sampler)


def _max_diff(ref_out, mine, B, sample_ratios):
    """Largest |difference| of noisy and target, sample by sample."""
    S = sum(sample_ratios)
    worst = 0.0
    for batch in mine:
        for j, b in enumerate(batch.indices.tolist()):
            noisy, tgt = ref_out[0][b % S][b // S], ref_out[3][b % S][b // S]
            worst = max(worst, float((batch.noisy[j].float() - noisy.float()).abs().max()),
                        float((batch.target[j].float() - tgt.float()).abs().max()))
    return worst


def _time(fn, repeats, sync):
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


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
    tables = _ref_tables(sch)
    cases = [
        ("image 16x16x1x128x128 fp32", (16, 16, 1, 128, 128), torch.float32),
        ("video 4x16x8x48x64 fp32", (4, 16, 8, 48, 64), torch.float32),
        ("video 4x16x16x64x96 fp32", (4, 16, 16, 64, 96), torch.float32),
        ("video 4x16x16x64x96 bf16", (4, 16, 16, 64, 96), torch.bfloat16),
    ]
    print(f"device: {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.repeats} interleaved repeats, sample_ratios (1, 2, 1)\n")
    print("| case | reference ms (median / best) | training_inputs ms (median / best) "
          "| speed-up (median / best) | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for name, shape, dtype in cases:
        g = torch.Generator().manual_seed(0)
        lat = torch.randn(shape, generator=g).to(dev, dtype)
        noise = torch.randn(shape, generator=g).to(dev, dtype)
        u = torch.rand(shape[0], generator=g)
        diff = _max_diff(reference_pyramid(lat, noise, u, sch, tables), ours(lat, noise, u, sch),
                         shape[0], (1, 2, 1))
        t_ref, t_ours = [], []
        for _ in range(args.repeats):  # interleave to share any drift of the machine
            t_ref += _time(lambda a=(lat, noise, u): reference_pyramid(*a, sch, tables), 1,
                           sync)
            t_ours += _time(lambda a=(lat, noise, u): ours(*a, sch), 1, sync)
        mr, mo = statistics.median(t_ref) * 1e3, statistics.median(t_ours) * 1e3
        br, bo = min(t_ref) * 1e3, min(t_ours) * 1e3
        print(f"| {name} | {mr:.1f} / {br:.1f} | {mo:.1f} / {bo:.1f} | "
              f"{mr / mo:.2f}x / {br / bo:.2f}x | {diff:.1e} |")
        assert math.isfinite(diff)


if __name__ == "__main__":
    main()
