"""The ``vidnoise`` command line: ``demo``, ``train``, ``sample``.

``main(argv=None) -> int`` returns the exit status. Bad input (a missing or corrupt
checkpoint, a data folder with no readable video, sizes the pyramid cannot halve,
``--minutes <= 0``, ...) prints one line ``vidnoise: error: ...`` to stderr and returns 2,
with no traceback. The heavy work lives in :mod:`vidnoise.demo`, imported only when a command
runs.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main", "build_parser"]


class _OneLineError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, raised instead of exiting."""

    def error(self, message):  # noqa: D401 - argparse API
        raise _OneLineError(f"{self.prog}: {message} (see --help)")


def _positive_float(name):
    def conv(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not v > 0 or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {text}")
        return v

    return conv


def _int_at_least(name, lo):
    def conv(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be an integer, got {text!r}"
            ) from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{name} must be >= {lo}, got {v}")
        return v

    return conv


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vidnoise", description="vidnoise: the noise side of video diffusion and "
                "flow-matching models. Commands: demo, train, sample.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="{demo,train,sample}")

    d = sub.add_parser("demo", help="train a tiny pyramidal-flow video model, sample, report",
                       description="Train on MovingShapes within a time budget, sample with the "
                       "pyramid sampler, time it against the flat sampler, measure sample "
                       "quality and write samples.gif, frames.png, metrics.json, report.md.")
    d.add_argument("--minutes", type=_positive_float("--minutes"), default=6.0,
                   help="training time budget in minutes (default 6)")
    d.add_argument("--steps", type=_int_at_least("--steps", 1), default=None,
                   help="also stop after this many training steps")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--size", type=_int_at_least("--size", 1), default=32)
    d.add_argument("--frames", type=_int_at_least("--frames", 1), default=8)
    d.add_argument("--batch-size", type=_int_at_least("--batch-size", 1), default=16)
    d.add_argument("--seed", type=_int_at_least("--seed", 0), default=0)
    d.add_argument("--sample-steps", type=_int_at_least("--sample-steps", 1), default=10,
                   help="Euler steps per pyramid stage (default 10)")
    d.add_argument("--samples", type=_int_at_least("--samples", 2), default=64,
                   help="videos per setting for the quality figures (default 64)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")

    t = sub.add_parser("train", help="train (pyramidal or --flat flow matching)",
                       description="Train the demo model; under torchrun it uses "
                       "DistributedDataParallel. Writes OUT/checkpoint.")
    t.add_argument("--data", default="shapes",
                   help="'shapes' (procedural MovingShapes) or a folder of .gif/.mp4 files")
    t.add_argument("--out", default="out/train")
    t.add_argument("--steps", type=_int_at_least("--steps", 1), default=None,
                   help="total optimizer steps (resumed runs count the steps already done)")
    t.add_argument("--minutes", type=_positive_float("--minutes"), default=None,
                   help="time budget in minutes for this run")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue this checkpoint folder (bit-for-bit)")
    t.add_argument("--flat", action="store_true",
                   help="plain full-resolution flow matching (the baseline)")
    t.add_argument("--i2v", action="store_true",
                   help="image-to-video: condition on the (noise-augmented) first frame")
    t.add_argument("--size", type=_int_at_least("--size", 1), default=32)
    t.add_argument("--frames", type=_int_at_least("--frames", 1), default=8)
    t.add_argument("--stages", type=_int_at_least("--stages", 1), default=3)
    t.add_argument("--batch-size", type=_int_at_least("--batch-size", 1), default=16)
    t.add_argument("--lr", type=_positive_float("--lr"), default=2e-3)
    t.add_argument("--width", type=_int_at_least("--width", 1), default=32,
                   help="channels of the model's first level")
    t.add_argument("--seed", type=_int_at_least("--seed", 0), default=0)
    t.add_argument("--checkpoint-every", type=_int_at_least("--checkpoint-every", 0), default=0)
    t.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("sample", help="sample a checkpoint to a GIF grid and a PNG of frames")
    s.add_argument("--checkpoint", required=True, help="a checkpoint folder (OUT/checkpoint)")
    s.add_argument("--out", default="out/sample")
    s.add_argument("--n", type=_int_at_least("--n", 1), default=16, help="number of videos")
    s.add_argument("--steps", type=_int_at_least("--steps", 1), default=20,
                   help="Euler steps per pyramid stage (flat: stages x steps)")
    s.add_argument("--seed", type=_int_at_least("--seed", 0), default=0)
    s.add_argument("--flat", action="store_true",
                   help="flat sampler (required for a checkpoint trained with --flat)")
    s.add_argument("--ablation", choices=["iid-renoise", "x2-bicubic"], default=None)
    s.add_argument("--compat", action="store_true",
                   help="reference stage grids (linspace(1, 0.001, n) then 0)")
    s.add_argument("--image", default=None,
                   help="image-to-video from this first frame (a checkpoint trained with --i2v)")
    s.add_argument("--raw", action="store_true", help="raw weights instead of the EMA")
    s.add_argument("--no-progress", action="store_true")
    return p


def _cmd_demo(a) -> int:
    from vidnoise.demo.run import run_demo

    run_demo(
        a.out, minutes=a.minutes, steps=a.steps, size=a.size, frames=a.frames, seed=a.seed,
        sample_steps=a.sample_steps, eval_samples=a.samples, batch_size=a.batch_size,
        progress=not a.no_progress,
    )
    return 0


def _cmd_train(a) -> int:
    from vidnoise.demo import DemoError
    from vidnoise.demo.model import ModelConfig
    from vidnoise.demo.train import TrainConfig, train

    if a.resume is not None:
        overrides = {"steps": a.steps, "minutes": a.minutes}
        if a.steps is None and a.minutes is None:
            raise DemoError("--resume needs --steps (a new total) or --minutes")
        train(out=a.out, resume=a.resume, overrides=overrides, progress=not a.no_progress,
              checkpoint_every=a.checkpoint_every)
        return 0
    if a.steps is None and a.minutes is None:
        raise DemoError("give --steps or --minutes (or both)")
    if a.data != "shapes" and not os.path.isdir(a.data):
        raise DemoError(f"data folder {a.data!r} does not exist (or use --data shapes)")
    cfg = TrainConfig(
        data=a.data, size=a.size, frames=a.frames, flat=a.flat, stages=a.stages,
        batch_size=a.batch_size, lr=a.lr, seed=a.seed, steps=a.steps, minutes=a.minutes,
        i2v=a.i2v,
        model=ModelConfig(width=a.width, stages=1 if a.flat else a.stages,
                          cond_channels=3 if a.i2v else 0),
    )
    train(cfg, a.out, progress=not a.no_progress, checkpoint_every=a.checkpoint_every)
    return 0


def _cmd_sample(a) -> int:
    from pathlib import Path

    from vidnoise.demo import DemoError
    from vidnoise.demo.sample import (
        image_condition,
        load_image,
        sample_videos,
        save_frames_png,
        save_gif,
    )
    from vidnoise.demo.train import load_model

    model, cfg, state = load_model(a.checkpoint, ema=not a.raw)
    cond = None
    if a.image is not None:
        if not cfg.i2v:
            raise DemoError(
                "--image needs a checkpoint trained with --i2v (image-to-video)"
            )
        img = load_image(a.image, cfg.size, cfg.model.channels)
        cond = image_condition(img, a.n, cfg.frames)
    x = sample_videos(
        model, cfg, a.n, steps=a.steps, seed=a.seed, flat=a.flat or cfg.flat,
        ablation=a.ablation, compat=a.compat, progress=not a.no_progress, cond=cond,
    )
    out = Path(a.out)
    gif = save_gif(x, out / "samples.gif", scale=3)
    png = save_frames_png(x[:8], out / "frames.png", scale=3)
    print(f"wrote {gif} and {png} ({a.n} videos, checkpoint step {state.get('step')})",
          file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """Run the command line; return the exit status (0 ok, 2 bad input, 130 interrupted)."""
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
    from vidnoise.demo import DemoError

    commands = {"demo": _cmd_demo, "train": _cmd_train, "sample": _cmd_sample}
    try:
        return commands[args.command](args)
    except DemoError as exc:
        print(f"vidnoise: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"vidnoise: error: {exc} (install the demo extra: pip install "
              f"'vidnoise[demo]')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidnoise: interrupted", file=sys.stderr)
        return 130
