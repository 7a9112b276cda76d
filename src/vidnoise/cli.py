"""The ``vidnoise`` command line: ``demo``, ``train``, ``sample``.

``main(argv=None) -> int`` returns the exit status. Bad input (a missing or corrupt
checkpoint, a data folder with no readable video, sizes the pyramid cannot halve, an output
folder in use, ...) prints one line ``vidnoise: error: ...`` to stderr and returns 2, with no
traceback. A run stopped by SIGTERM or SIGINT saves a checkpoint and returns 128 + the
signal number (143, 130).

Threads: before torch is imported, the command line chooses how idle OpenMP threads wait
(:func:`thread_env`: they sleep at once on a busy machine instead of spinning against the
other processes, and spin briefly on an idle one), and it uses as many threads as cores this
process may run on (``os.sched_getaffinity``), or ``--threads``. :func:`entry` (the
``vidnoise`` script and ``python -m vidnoise``) restarts the interpreter once with that
setting when torch was imported before it could be made.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main", "entry", "build_parser", "available_cores"]

_SEED_MAX = 2**63 - 1


class _OneLineError(Exception):
    pass


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to every flag's help unless the help says it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, raised instead of exiting."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D401 - argparse API
        raise _OneLineError(f"{self.prog}: {message} (see --help)")


def available_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def thread_env() -> dict[str, str]:
    """OpenMP waiting for this run; it takes effect only if set before torch loads OpenMP.

    Nothing when the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``. On a busy machine
    (1-minute load average >= the cores this process may use - 0.5) idle OpenMP threads
    sleep at once (``OMP_WAIT_POLICY=PASSIVE``): spinning threads fight the other processes
    for the cores. Otherwise they spin briefly before sleeping (``GOMP_SPINCOUNT=2000``),
    which keeps the idle-machine speed that passive waiting loses. Measured on the 2-core
    machine, `vidnoise train --steps 6`: idle, passive 2.8-3.1 s against 2.3-2.5 s for the
    brief spin and torch's default; with one competing busy process, passive 4.9 s, brief
    spin 5.3-5.8 s, one thread 4.2-4.6 s, torch's default 8.5-8.7 s (docs/performance.md).
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return {}
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        load = 0.0
    if load >= available_cores() - 0.5:
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    return {"GOMP_SPINCOUNT": "2000"}


def _set_thread_env() -> None:
    """:func:`thread_env` into ``os.environ`` (for subprocesses and a later torch import)."""
    os.environ.update(thread_env())


def _float_in(name, low, high=None):
    def conv(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not (v > low) or v != v or v == float("inf") or (high is not None and v > high):
            rng = f"> {low:g}" + ("" if high is None else f" and <= {high:g}")
            raise argparse.ArgumentTypeError(f"{name} must be {rng}, got {text}")
        return v

    return conv


def _int_in(name, lo, hi=None):
    def conv(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be an integer, got {text!r}"
            ) from None
        if v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" + ("" if hi is None else f" and <= {hi}")
            raise argparse.ArgumentTypeError(f"{name} must be {rng}, got {v}")
        return v

    return conv


def _ratios(text):
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sample-ratios must be comma-separated integers (e.g. 1,2,1), got {text!r}"
        ) from None
    if any(v < 0 for v in vals) or sum(vals) < 1:
        raise argparse.ArgumentTypeError(
            f"--sample-ratios must be >= 0 with a positive sum, got {text!r}")
    return vals


def _common(p, *, seed_help="random seed (0 to 2^63 - 1)"):
    p.add_argument("--seed", type=_int_in("--seed", 0, _SEED_MAX), default=0, help=seed_help)
    p.add_argument("--threads", type=_int_in("--threads", 1), default=None,
                   help="CPU threads for torch (default: $OMP_NUM_THREADS if set, else the cores "
                   f"this process may use, now {available_cores()})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _model_flags(p, *, stages_default=3):
    p.add_argument("--size", type=_int_in("--size", 1), default=32,
                   help="frame height and width in pixels (a multiple of 4·2^(stages-1))")
    p.add_argument("--frames", type=_int_in("--frames", 1), default=8, help="frames per clip")
    p.add_argument("--stages", type=_int_in("--stages", 1, 8), default=stages_default,
                   help="pyramid stages (each halves the resolution); the sample ratios, "
                   "stage boundaries and stage embeddings follow from it")
    p.add_argument("--batch-size", type=_int_in("--batch-size", 1), default=None,
                   help="clips per step (default: 16 rounded up to a multiple of the sum of "
                   "the sample ratios)")
    p.add_argument("--width", type=_int_in("--width", 1), default=32,
                   help="channels of the model's first level")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vidnoise", description="vidnoise: the noise side of video diffusion and "
                "flow-matching models. Commands: demo, train, sample.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="{demo,train,sample}")

    d = sub.add_parser("demo", help="train a tiny pyramidal-flow video model, sample, report",
                       description="Train on MovingShapes, sample with the pyramid sampler, "
                       "time it against the flat sampler, measure sample quality and write "
                       "samples.gif, frames.png, metrics.json, report.md; the whole run "
                       "(training, sampling, figures) stays within --minutes.")
    d.add_argument("--minutes", type=_float_in("--minutes", 0.0), default=8.0,
                   help="time budget of the whole demo in minutes (training gets what "
                   "sampling and the figures leave)")
    d.add_argument("--steps", type=_int_in("--steps", 1), default=None,
                   help="also stop training after this many steps (default: no limit)")
    d.add_argument("--out", default="out/demo", help="output folder")
    _model_flags(d)
    d.add_argument("--sample-steps", type=_int_in("--sample-steps", 1), default=10,
                   help="Euler steps per pyramid stage")
    d.add_argument("--samples", type=_int_in("--samples", 2), default=64,
                   help="videos per setting for the quality figures (fewer if the time "
                   "budget needs it)")
    _common(d)

    t = sub.add_parser("train", help="train (pyramidal or --flat flow matching)",
                       description="Train the demo model; under torchrun it uses "
                       "DistributedDataParallel. Writes OUT/checkpoint (also on SIGTERM / "
                       "Ctrl-C). With --resume, only --steps, --minutes and "
                       "--checkpoint-every apply; flags that change the model, data or "
                       "schedule are refused.")
    t.add_argument("--data", default="shapes",
                   help="'shapes' (procedural MovingShapes) or a folder of .gif/.mp4 files")
    t.add_argument("--out", default="out/train", help="output folder (locked while training)")
    t.add_argument("--steps", type=_int_in("--steps", 1), default=None,
                   help="total optimizer steps; resumed runs count the steps already done "
                   "(default: none; give --steps or --minutes)")
    t.add_argument("--minutes", type=_float_in("--minutes", 0.0), default=None,
                   help="time budget in minutes for this run (default: none)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue this checkpoint folder, bit-for-bit (default: a new run)")
    t.add_argument("--flat", action="store_true",
                   help="plain full-resolution flow matching (the baseline)")
    t.add_argument("--i2v", action="store_true",
                   help="image-to-video: condition on the (noise-augmented) first frame")
    _model_flags(t)
    t.add_argument("--sample-ratios", type=_ratios, default=None, metavar="R1,R2,...",
                   help="batch columns per stage (default: 1 for the first and last stage, "
                   "2 for each middle one: 1,2,1 at 3 stages)")
    t.add_argument("--lr", type=_float_in("--lr", 0.0), default=2e-3,
                   help="AdamW learning rate (below 1/weight decay = 100)")
    t.add_argument("--checkpoint-every", type=_int_in("--checkpoint-every", 0), default=0,
                   help="also save every N steps (0: only at the end)")
    _common(t)

    s = sub.add_parser("sample", help="sample a checkpoint to a GIF grid and a PNG of frames")
    s.add_argument("--checkpoint", required=True, help="a checkpoint folder (OUT/checkpoint)")
    s.add_argument("--out", default="out/sample", help="output folder")
    s.add_argument("--n", type=_int_in("--n", 1), default=16, help="number of videos")
    s.add_argument("--steps", type=_int_in("--steps", 1), default=20,
                   help="Euler steps per pyramid stage (flat: stages x steps)")
    s.add_argument("--flat", action="store_true",
                   help="sample a checkpoint trained with --flat (the flat sampler)")
    s.add_argument("--ablation", choices=["iid-renoise", "x2-bicubic"], default=None,
                   help="sampler ablation, pyramid checkpoints only (default: none)")
    s.add_argument("--grid", choices=["exact", "reference"], default="exact",
                   help="stage grids: equal steps down to 0, or Pyramid-Flow's reference "
                   "linspace(1, 0.001, n) then 0 (default: exact)")
    s.add_argument("--image", default=None,
                   help="image-to-video from this first frame, for a checkpoint trained with --i2v "
                   "(default: unconditional)")
    s.add_argument("--raw", action="store_true", help="raw weights instead of the EMA")
    _common(s)
    return p


def _batch_size(a, ratios) -> int:
    if a.batch_size is not None:
        return a.batch_size
    step = 1 if a.flat else sum(ratios)
    return -(-16 // step) * step


def _cmd_demo(a, log) -> int:
    from vidnoise.demo.run import run_demo

    m = run_demo(
        a.out, minutes=a.minutes, steps=a.steps, size=a.size, frames=a.frames, seed=a.seed,
        sample_steps=a.sample_steps, eval_samples=a.samples, batch_size=a.batch_size,
        stages=a.stages, width=a.width, progress=not a.no_progress, log=log,
    )
    if "signal" in m:
        return _signal_exit({"signal": m["signal"], "steps": m["training"]["steps"],
                             "checkpoint": m["training"]["checkpoint"]}, log)
    return 0


# flags that fix the model, data or schedule: refused with --resume
_FIXED = ("data", "flat", "i2v", "size", "frames", "stages", "batch_size", "width",
          "sample_ratios", "lr", "seed")


def _given(a, flag: str) -> bool:
    """Whether ``flag`` was on the command line (also as ``--flag=value``)."""
    return any(t == flag or t.startswith(flag + "=") for t in a.argv)


def _cmd_train(a, log) -> int:
    from vidnoise.demo import DemoError
    from vidnoise.demo.config import TrainConfig, default_sample_ratios
    from vidnoise.demo.model import ModelConfig
    from vidnoise.demo.train import train

    if a.resume is not None:
        given = [k for k in _FIXED if _given(a, "--" + k.replace("_", "-"))]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise DemoError(
                f"--resume continues the checkpoint's model, data and schedule; {flags} "
                "cannot change them (only --steps, --minutes and --checkpoint-every apply; "
                "start a new run with another --out instead)"
            )
        if a.steps is None and a.minutes is None:
            raise DemoError("--resume needs --steps (a new total) or --minutes")
        overrides = {k: getattr(a, k) for k in ("steps", "minutes") if getattr(a, k) is not None}
        r = train(out=a.out, resume=a.resume, overrides=overrides, progress=not a.no_progress,
                  checkpoint_every=a.checkpoint_every, log=log)
        return _signal_exit(r, log)
    if a.steps is None and a.minutes is None:
        raise DemoError("give --steps or --minutes (or both)")
    if a.data != "shapes" and not os.path.isdir(a.data):
        raise DemoError(f"data folder {a.data!r} does not exist (or use --data shapes)")
    ratios = a.sample_ratios or default_sample_ratios(a.stages)
    cfg = TrainConfig(
        data=a.data, size=a.size, frames=a.frames, flat=a.flat, stages=a.stages,
        sample_ratios=ratios, batch_size=_batch_size(a, ratios), lr=a.lr, seed=a.seed,
        steps=a.steps, minutes=a.minutes, i2v=a.i2v,
        model=ModelConfig(width=a.width, stages=1 if a.flat else a.stages,
                          cond_channels=3 if a.i2v else 0),
    )
    r = train(cfg, a.out, progress=not a.no_progress, checkpoint_every=a.checkpoint_every,
              log=log)
    return _signal_exit(r, log)


def _signal_exit(summary: dict, log) -> int:
    import signal

    name = summary.get("signal")
    if name is None:
        return 0
    log(f"vidnoise: stopped by {name}; checkpoint saved at step {summary['steps']}: "
        f"{summary['checkpoint']}")
    return 128 + int(getattr(signal, name))


def _cmd_sample(a, log) -> int:
    from pathlib import Path

    from vidnoise.demo import DemoError
    from vidnoise.demo.sample import (
        image_condition,
        load_image,
        sample_videos,
        save_frames_png,
        save_gif,
    )
    from vidnoise.demo.trainer import load_model

    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {str(out)!r} is an existing file; give a folder")
    model, cfg, state = load_model(a.checkpoint, ema=not a.raw)
    if a.flat and not cfg.flat:
        raise DemoError(f"checkpoint {a.checkpoint!r} was trained with the pyramid "
                        f"({cfg.stages} stages): sample it without --flat")
    if cfg.flat and not a.flat:
        raise DemoError(f"checkpoint {a.checkpoint!r} was trained with --flat: sample it "
                        "with --flat")
    cond = None
    if a.image is not None:
        if not cfg.i2v:
            raise DemoError(
                "--image needs a checkpoint trained with --i2v (image-to-video)"
            )
        img = load_image(a.image, cfg.size, cfg.model.channels)
        cond = image_condition(img, a.n, cfg.frames)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"--out {str(out)!r} cannot be created: {exc.strerror}") from None
    x = sample_videos(
        model, cfg, a.n, steps=a.steps, seed=a.seed, flat=cfg.flat,
        ablation=a.ablation, grid=a.grid, progress=not a.no_progress, cond=cond,
    )
    gif = save_gif(x, out / "samples.gif", scale=3)
    png = save_frames_png(x[:8], out / "frames.png", scale=3)
    log(f"wrote {gif} and {png} ({a.n} videos, checkpoint step {state.get('step')})")
    return 0


def _set_threads(a) -> None:
    import torch

    if a.threads is None and os.environ.get("OMP_NUM_THREADS"):
        return  # the user's OMP_NUM_THREADS (torch read it at import)
    n = a.threads if a.threads is not None else available_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def main(argv=None) -> int:
    """Run the command line; return the exit status (0 ok, 2 bad input, 128 + signal number
    when SIGTERM / SIGINT stopped a run after saving)."""
    _set_thread_env()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _OneLineError as exc:
        print(f"vidnoise: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    from vidnoise.demo import DemoError

    commands = {"demo": _cmd_demo, "train": _cmd_train, "sample": _cmd_sample}
    try:
        _set_threads(args)
        return commands[args.command](args, log)
    except DemoError as exc:
        print(f"vidnoise: error: {str(exc).splitlines()[0] if str(exc) else exc}",
              file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"vidnoise: error: {exc} (install the demo extra: pip install "
              f"'vidnoise[demo]')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidnoise: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``vidnoise`` script and ``python -m vidnoise``: :func:`main` with the thread
    environment set before torch loads (restarting the interpreter once if it was loaded
    already)."""
    settings = thread_env()
    if settings and "torch" in sys.modules and not os.environ.get("VIDNOISE_REEXEC"):
        env = dict(os.environ, **settings, VIDNOISE_REEXEC="1")
        os.execve(sys.executable, [sys.executable, "-m", "vidnoise", *sys.argv[1:]], env)
    os.environ.update(settings)
    raise SystemExit(main())
