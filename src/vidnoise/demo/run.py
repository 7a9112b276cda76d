"""``vidnoise demo``: train a tiny pyramidal-flow video model, sample it, measure, report.

Writes to ``out`` (default ``out/demo``): ``checkpoint/``, ``samples.gif`` (a grid of samples
of the trained model), ``frames.png`` (rows of frames: real clips, trained samples, an
untrained model, the two ablations), ``metrics.json`` and ``report.md``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from vidnoise.demo._errors import DemoError

__all__ = ["run_demo", "render_report"]


def _timed(fn, repeats: int = 2) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_demo(
    out="out/demo",
    *,
    minutes: float = 8.0,
    steps: int | None = None,
    size: int = 32,
    frames: int = 8,
    seed: int = 0,
    sample_steps: int = 10,
    eval_samples: int = 64,
    batch_size: int | None = None,
    stages: int = 3,
    width: int = 32,
    progress: bool = True,
    log=None,
) -> dict:
    """The whole demo; returns the metrics dict (also written to ``metrics.json``), or
    ``{"signal": name, "training": summary}`` when SIGTERM / SIGINT stopped training (the
    checkpoint is saved; nothing else is written).

    ``minutes`` bounds the whole run: the cost of sampling is measured first (one small
    batch with the untrained model), the number of quality samples is lowered if sampling
    would take more than 40 % of the budget, and training gets the rest.
    """
    from vidnoise.demo.config import TrainConfig, default_sample_ratios
    from vidnoise.demo.data import MovingShapes
    from vidnoise.demo.metrics import RandomVideoEncoder, features, quality_figures
    from vidnoise.demo.model import ModelConfig, TinyVideoUNet
    from vidnoise.demo.sample import sample_videos, save_frames_png, save_gif
    from vidnoise.demo.train import train

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if eval_samples < 2:
        raise DemoError(f"--samples must be >= 2, got {eval_samples}")
    if sample_steps < 1:
        raise DemoError(f"--sample-steps must be >= 1, got {sample_steps}")
    if not minutes > 0:
        raise DemoError(f"--minutes must be > 0, got {minutes}")
    out = Path(out)
    t_start = time.perf_counter()
    budget = 60.0 * minutes
    ratios = default_sample_ratios(stages)
    if batch_size is None:
        batch_size = -(-16 // sum(ratios)) * sum(ratios)
    cfg = TrainConfig(
        size=size, frames=frames, seed=seed, minutes=minutes, steps=steps, stages=stages,
        sample_ratios=ratios, batch_size=batch_size,
        model=ModelConfig(width=width, stages=stages),
    ).check()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 12345)
        untrained = TinyVideoUNet(cfg.model).eval().requires_grad_(False)

    # ------------------------------------------------ the cost of sampling, measured first
    tb = 2
    sample_videos(untrained, cfg, 1, steps=1, seed=1)  # warm-up (first calls are slow)
    t0 = time.perf_counter()
    sample_videos(untrained, cfg, tb, steps=sample_steps, seed=1)
    t_pyr_probe = (time.perf_counter() - t0) / tb  # seconds per pyramid video
    share = sum(4.0 ** -(cfg.stages - 1 - k) for k in range(cfg.stages)) / cfg.stages
    per_flat = t_pyr_probe / max(share, 0.05)  # the flat sampler costs about 1/share more
    timing_cost = 2 * tb * (t_pyr_probe + per_flat)  # best of 2, pyramid and flat
    n = eval_samples
    sample_budget = 0.4 * budget - timing_cost
    fits = int(sample_budget / (4 * t_pyr_probe * 1.2)) if sample_budget > 0 else 0
    if fits < n:
        n = max(2, fits)
        log(f"[demo] {eval_samples} samples per setting do not fit in {minutes:g} min "
            f"({t_pyr_probe:.2f} s per video): using {n}")
    sampling_cost = 4 * n * t_pyr_probe * 1.2 + timing_cost
    spent = time.perf_counter() - t_start
    train_minutes = max((budget - spent - sampling_cost) / 60.0, 1e-3)
    cfg = cfg.with_overrides(minutes=train_minutes)
    log(f"[demo] training a pyramidal flow model on MovingShapes {size}x{size}x{frames} "
        f"for up to {train_minutes:.2f} of {minutes:g} min ({cfg.stages} stage(s): "
        + ", ".join(f"{size >> (cfg.stages - 1 - k)}x{size >> (cfg.stages - 1 - k)}"
                    for k in range(cfg.stages)) + ")")
    summary = train(cfg, out, progress=progress, log=log)
    trainer = summary.pop("trainer")
    if summary["signal"] is not None:  # SIGTERM / SIGINT: saved, stop here
        return {"signal": summary["signal"], "training": summary}
    model = trainer.ema.eval()

    # ---------------------------------------------------------------- sampling
    log(f"[demo] sampling {n} videos per setting, {sample_steps} Euler steps per stage")
    real_ref = MovingShapes(size, frames, cfg.model.channels, cfg.max_shapes, seed=seed + 101)
    real_held = MovingShapes(size, frames, cfg.model.channels, cfg.max_shapes, seed=seed + 202)
    ref = real_ref.batch(range(n))
    sets = {"real (held-out clips)": real_held.batch(range(n))}
    times = {}
    specs = [
        ("trained, pyramid sampler", model, {}),
        ("untrained model", untrained, {}),
        ("ablation: renoise without block correlation (γ = 0)", model,
         {"ablation": "iid-renoise"}),
        ("ablation: noise pyramid with constant x2 on bicubic", model,
         {"ablation": "x2-bicubic"}),
    ]
    bar = _bar(progress, 4 * n, "sample")
    for name, m, kw in specs:
        t0 = time.perf_counter()
        parts = []
        for lo in range(0, n, 16):
            parts.append(sample_videos(m, cfg, min(16, n - lo), steps=sample_steps,
                                       seed=seed + 7, first=lo, **kw))
            if bar is not None:
                bar.update(parts[-1].shape[0])
        sets[name] = torch.cat(parts)
        times[name] = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    # ---------------------------------------------------------------- timing
    log(f"[demo] timing pyramid vs flat sampling (batch {tb}, {sample_steps} steps per stage "
        f"vs {cfg.stages * sample_steps} flat steps)")
    t_pyr, _ = _timed(lambda: sample_videos(model, cfg, tb, steps=sample_steps, seed=1))
    t_flat, flat_x = _timed(
        lambda: sample_videos(model, cfg, tb, steps=sample_steps, seed=1, flat=True)
    )

    # ---------------------------------------------------------------- metrics
    enc = RandomVideoEncoder(cfg.model.channels, seed=0)
    fref = features(ref, enc)
    quality = {name: quality_figures(x, ref, enc, fref) for name, x in sets.items()}
    ref_stats = quality_figures(ref, ref, enc, fref)

    # ---------------------------------------------------------------- pictures
    trained = sets["trained, pyramid sampler"]
    gif = save_gif(trained[:16], out / "samples.gif", cols=4, scale=3)
    rows = [sets["real (held-out clips)"][:2], trained[:4]]
    labels = ["real", "real"] + ["trained"] * 4
    for name, short in (
        ("untrained model", "untrained"),
        ("ablation: renoise without block correlation (γ = 0)", "iid renoise"),
        ("ablation: noise pyramid with constant x2 on bicubic", "x2 bicubic"),
    ):
        rows.append(sets[name][:2])
        labels += [short] * 2
    png = save_frames_png(torch.cat(rows), out / "frames.png", scale=3, labels=labels)

    total = time.perf_counter() - t_start
    losses = summary["losses"]
    window = max(1, min(50, len(losses) // 2))
    metrics = {
        "budget_s": budget,
        "config": cfg.to_dict(),
        "training": {k: v for k, v in summary.items() if k != "losses"},
        "loss_window": window,
        "loss_first": sum(losses[:window]) / max(1, len(losses[:window])),
        "loss_last": sum(losses[-window:]) / max(1, len(losses[-window:])),
        "sampling": {
            "steps_per_stage": sample_steps,
            "batch": tb,
            "pyramid_s": t_pyr,
            "flat_s": t_flat,
            "ratio_pyramid_over_flat": t_pyr / t_flat,
            "token_share_expected": share,
            "flat_finite": bool(torch.isfinite(flat_x).all()),
            "per_setting_s": times,
        },
        "quality": quality,
        "reference_flicker": ref_stats["flicker"],
        "reference_motion": ref_stats["motion"],
        "eval_samples": n,
        "total_s": total,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "files": {"gif": str(gif), "frames": str(png)},
    }
    with open(out / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False, default=float)
    (out / "report.md").write_text(render_report(metrics), encoding="utf-8")
    log(f"[demo] pyramid/flat sampling time {t_pyr / t_flat:.2f} (token share {share:.3f}); "
        f"FD real {quality['real (held-out clips)']['fd']:.2f}, trained "
        f"{quality['trained, pyramid sampler']['fd']:.2f}, untrained "
        f"{quality['untrained model']['fd']:.2f}")
    log(f"[demo] done in {total / 60:.1f} min: {out / 'samples.gif'}, {out / 'frames.png'}, "
        f"{out / 'metrics.json'}, {out / 'report.md'}")
    return metrics


def figures_table(metrics: dict) -> str:
    """The quality table of the report (markdown)."""
    lines = [
        "| videos | Fréchet distance (random 3-D conv features) ↓ | flicker (ref "
        f"{metrics['reference_flicker']:.4f}) | motion (ref {metrics['reference_motion']:.4f}) "
        "| colour-histogram TV ↓ |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, q in metrics["quality"].items():
        lines.append(
            f"| {name} | {q['fd']:.2f} | {q['flicker']:.4f} | {q['motion']:.4f} "
            f"| {q['colour_tv']:.3f} |"
        )
    return "\n".join(lines)


def _reading(m: dict) -> str:
    """One line per non-trained row: which figures are worse than the trained model's."""
    q = m["quality"]
    trained = q.get("trained, pyramid sampler")
    if trained is None:
        return ""
    names = {"fd": "Fréchet distance", "flicker_gap": "flicker gap to the reference",
             "colour_tv": "colour TV"}
    lines = ["Compared with the trained model (same checkpoint for the ablations):"]
    for name, row in q.items():
        if name == "trained, pyramid sampler":
            continue
        worse = [f"{label} {row[key]:.3g} vs {trained[key]:.3g}"
                 for key, label in names.items() if row[key] > trained[key]]
        better = [label for key, label in names.items() if row[key] <= trained[key]]
        text = ("worse on " + "; ".join(worse)) if worse else "better on every figure"
        if better and worse:
            text += " (not worse on " + ", ".join(better) + ")"
        lines.append(f"- *{name}*: {text}.")
    return "\n".join(lines)


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, unit="video", dynamic_ncols=True, file=sys.stderr)


def _loss_sentence(m: dict) -> str:
    steps = m["training"]["steps"]
    w = m.get("loss_window", 50)
    if steps < 2:
        return f"Loss (MSE of the stage velocity `start - end`): {m['loss_last']:.4f} " \
               f"after {steps} step(s), too short a run to show a trend."
    return (f"Loss (MSE of the stage velocity `start - end`): {m['loss_first']:.4f} over the "
            f"first {w} steps, {m['loss_last']:.4f} over the last {w}"
            + (" (a short run: the first steps are still in the learning-rate warm-up)"
               if steps < 100 else "") + ".")


def _time_reading(s: dict) -> str:
    """The measured time ratio in words, the right way round."""
    r, share = s["ratio_pyramid_over_flat"], s["token_share_expected"]
    text = (f"the pyramid sampler took {r:.3f} of the flat sampler's time "
            f"({1 / r:.1f}x faster), {_compare(r, share)}")
    if r > 1.1 * share:
        return text + (" (above it: a conv net's fixed per-call costs weigh more on the "
                       "small stages than their pixel count).")
    if r < 0.9 * share:
        return text + (" (below it: the full-resolution calls of the flat sampler cost more "
                       "than their pixel count here, e.g. memory traffic, or the machine "
                       "was busier while they ran; the two are timed back to back).")
    return text + "."


def _compare(measured: float, expected: float) -> str:
    rel = measured / expected - 1
    if abs(rel) < 0.1:
        return f"within {abs(rel) * 100:.0f} % of it"
    return f"{abs(rel) * 100:.0f} % {'above' if rel > 0 else 'below'} it"


def render_report(m: dict) -> str:
    """``report.md`` from the metrics dict."""
    s = m["sampling"]
    tr = m["training"]
    c = m["config"]
    k = c["stages"]
    res = ", ".join(f"{c['size'] >> (k - 1 - i)}²" for i in range(k))
    return f"""# vidnoise demo report

A {tr['params'] / 1e6:.2f} M-parameter (2+1)-D conv U-Net trained with pyramidal flow matching
(`PyramidSchedule.training_inputs`, {k} stages at {res} per frame, {c['frames']} frames,
sample ratios {tuple(c['sample_ratios'])}) on procedural MovingShapes clips for
{tr['steps']} steps ({tr['seconds'] / 60:.1f} min, batch {c['batch_size']},
{tr['samples_per_s']:.1f} clips/s, {m['threads']} threads). {_loss_sentence(m)}
Samples use the EMA weights and `sample_pyramid` with {s['steps_per_stage']}
Euler steps per stage (equal steps, `grid="exact"`).

![samples](samples.gif)

![frames](frames.png)

Rows of `frames.png`: 2 real clips, 4 samples of the trained model, then 2 each from an
untrained model, the γ = 0 ablation and the constant-x2 ablation (frames left to right).

## Sampling time: pyramid vs flat

Same network, same batch ({s['batch']} clips), {s['steps_per_stage']} steps per stage for the
pyramid against {k * s['steps_per_stage']} steps at full resolution for the flat Euler sampler
(`sample_flow`), measured in this run (best of 2):

| sampler | wall time (s) |
|---|---:|
| pyramid (`sample_pyramid`) | {s['pyramid_s']:.2f} |
| flat (`sample_flow`) | {s['flat_s']:.2f} |
| **ratio pyramid / flat** | **{s['ratio_pyramid_over_flat']:.3f}** |

The pixel ("token") share of a {k}-stage pyramid is
({' + '.join(f'1/{4 ** (k - 1 - i)}' for i in range(k))})/{k} = {s['token_share_expected']:.4f};
{_time_reading(s)}

## Sample quality

{m['eval_samples']} videos per row, all compared with {m['eval_samples']} real reference clips
(a different seed of MovingShapes than the held-out real row):

{figures_table(m)}

{_reading(m)}

What the figures measure:
- **Fréchet distance** between Gaussians fitted to features of a fixed, seeded, *untrained*
  3-D conv encoder (3 layers, 3x3x3 kernels, channel means and standard deviations): an
  FVD-like figure with no pretrained network and no download. It responds to colour, edges,
  texture and short-range motion, so it separates clean moving shapes from noise, blur and
  wrong colours. It knows nothing about semantics or object identity, it is biased upwards
  for small sets (the real-vs-real row is the floor at this set size), and it is only
  comparable across runs with the same encoder seed, resolution and frame count.
- **flicker**: mean |x(t+1) - 2x(t) + x(t-1)| (intensity in [0, 1]): frame-to-frame changes
  that are not smooth motion; **motion**: mean |x(t+1) - x(t)|. Closer to the reference is
  better for both; neither says whether the right things move.
- **colour-histogram TV**: total-variation distance of the joint colour histograms (8 bins
  per channel): the palette only, blind to shape and motion.

Ablations (same checkpoint, same seeds, only the sampler's noise handling changed):
- *renoise without block correlation (γ = 0)*: the stage jump adds i.i.d. noise with the
  same α, β instead of 2x2 block noise of correlation -1/3. Nearest upsampling makes the
  previous stage's noise constant on 2x2 blocks; only the negatively correlated block noise
  turns that into white noise of the right level, so here every stage starts from blocky,
  wrongly correlated noise the model never saw in training.
- *noise pyramid with constant x2 on bicubic*: the stage-0 start is
  `interpolate(n, half, 'bicubic') * 2` per level, the reference's constant factor on a mode
  where it is wrong (variance about 2 per level, 3.1 after two levels, instead of 1); the
  library's `noise_pyramid` compensates position by position and keeps unit variance.

Total demo time: {m['total_s'] / 60:.1f} min (torch {m['torch']}).
"""
