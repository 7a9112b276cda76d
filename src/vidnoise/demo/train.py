"""The demo's training loop: ``train(cfg, out)`` (config: :mod:`vidnoise.demo.config`, one
process's step: :mod:`vidnoise.demo.trainer`, files: :mod:`vidnoise.demo.checkpoint`,
``torchrun``: :mod:`vidnoise.demo.distributed`).

The loop never loses work:

* the output folder is locked (a second run on it refuses) and checked before training;
* checkpoints are written so that a kill at any point leaves a complete one;
* SIGTERM (a scheduler's pre-emption) and SIGINT (Ctrl-C) finish the current step, save a
  checkpoint and end the run (``summary["signal"]`` names the signal);
* a diverged run (non-finite loss for ``max_bad_steps`` steps in a row) stops with
  :class:`~vidnoise.demo.trainer.NonFiniteLoss` and keeps the last good checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from vidnoise.demo._errors import DemoError
from vidnoise.demo.checkpoint import lock_folder
from vidnoise.demo.config import RESUMABLE, TrainConfig
from vidnoise.demo.distributed import any_rank, dist_info, init_distributed
from vidnoise.demo.trainer import (
    NonFiniteLoss,
    Trainer,
    build_dataset,
    build_schedule,
    load_model,
)

__all__ = ["TrainConfig", "Trainer", "NonFiniteLoss", "train", "build_dataset",
           "build_schedule", "load_model"]


class _Signals:
    """SIGTERM / SIGINT set a flag (the loop saves and stops); restored on exit."""

    def __init__(self, enabled: bool):
        self.received = None
        self._old = {}
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def _handler(self, signum, frame):
        self.received = signum

    def __enter__(self):
        if self.enabled:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or (
        type(exc).__name__ == "OutOfMemoryError")


def train(
    cfg: TrainConfig | None = None,
    out: str | os.PathLike = "out/train",
    *,
    resume: str | os.PathLike | None = None,
    overrides: dict | None = None,
    progress: bool = True,
    checkpoint_every: int = 0,
    device: str | None = None,
    log=None,
    signals: bool = True,
) -> dict:
    """Train until ``cfg.steps`` or ``cfg.minutes``; write ``<out>/checkpoint``; return a summary.

    ``resume`` continues a checkpoint with its config; ``overrides`` may change only
    :data:`~vidnoise.demo.config.RESUMABLE` fields (``steps``, ``minutes``).
    ``checkpoint_every`` > 0 also saves every that many steps. ``signals``: catch
    SIGTERM/SIGINT (main thread only) to save and stop. The summary has ``steps``,
    ``seconds``, ``losses`` (per step), ``samples_per_s``, ``checkpoint``, ``params``,
    ``skipped`` (non-finite steps), ``signal`` (None, or the signal that ended the run).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    rank, ws = dist_info()
    bad = sorted(set(overrides or {}) - set(RESUMABLE))
    if bad:
        raise DemoError(f"a resumed run can change only {', '.join(RESUMABLE)}, not "
                        f"{', '.join(bad)}")
    lock = lock_folder(out) if rank == 0 else None
    try:
        return _train_locked(cfg, out, resume, overrides, progress, checkpoint_every, device,
                             log, signals)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(cfg, out, resume, overrides, progress, checkpoint_every, device, log,
                  signals) -> dict:
    rank, ws = dist_info()
    owns_group = False
    if ws > 1:
        device, owns_group = init_distributed(device)
    device = device or "cpu"
    if resume is not None:
        trainer = Trainer.from_checkpoint(resume, device=device, overrides=overrides, log=log)
        if rank == 0:
            applied = [f"{k} {v:g}" for k, v in (overrides or {}).items()]
            if checkpoint_every:
                applied.append(f"checkpoint every {checkpoint_every} steps")
            log(f"resuming {resume} at step {trainer.step_count}"
                + (f", applying {', '.join(applied)}" if applied else ""))
    else:
        if cfg is None:
            raise DemoError("give a config or a checkpoint to resume")
        trainer = Trainer(cfg, device=device, log=log)
    cfg = trainer.cfg
    ckpt = Path(out) / "checkpoint"
    params = sum(p.numel() for p in trainer.model.parameters())
    budget = None if cfg.minutes is None else cfg.minutes * 60.0
    start_step = trainer.step_count
    target = cfg.steps
    bar = None
    if progress and rank == 0:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=target, initial=start_step, desc="train", unit="step",
                       dynamic_ncols=True, file=sys.stderr)
        except ImportError:  # pragma: no cover
            bar = None
    losses = []
    t0 = time.perf_counter()
    with _Signals(signals) as sigs:
        try:
            while True:
                if target is not None and trainer.step_count >= target:
                    break
                stop = (budget is not None and trainer.run_elapsed >= budget) or (
                    sigs.received is not None)
                if any_rank(stop, ws, device):  # every rank stops at the same step
                    break
                before = trainer.step_count
                try:
                    loss = trainer.step()
                except NonFiniteLoss:
                    raise
                except (RuntimeError, MemoryError) as exc:
                    if _is_oom(exc):
                        raise DemoError(
                            f"out of memory at size {cfg.size}, {cfg.frames} frames, batch "
                            f"{cfg.batch_size}, width {cfg.model.width}: make them smaller"
                        ) from None
                    raise
                trainer.run_elapsed = time.perf_counter() - t0
                if trainer.step_count == before:  # a skipped (non-finite) step
                    continue
                losses.append(loss)
                if bar is not None:
                    rate = (trainer.step_count - start_step) * cfg.batch_size * ws / max(
                        trainer.run_elapsed, 1e-9)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.1f}", refresh=False)
                if checkpoint_every and trainer.step_count % checkpoint_every == 0:
                    trainer.save(ckpt)
        finally:
            if bar is not None:
                bar.close()
        run_elapsed = trainer.run_elapsed
        trainer.save(ckpt)
        trainer.elapsed += run_elapsed
        trainer.run_elapsed = 0.0
    if owns_group:  # started here under torchrun: shut it down cleanly
        import torch.distributed as dist

        dist.destroy_process_group()
    steps = trainer.step_count - start_step
    summary = {
        "steps": trainer.step_count,
        "steps_this_run": steps,
        "seconds": run_elapsed,
        "samples_per_s": steps * cfg.batch_size * ws / max(run_elapsed, 1e-9),
        "losses": losses,
        "checkpoint": str(ckpt),
        "params": params,
        "world_size": ws,
        "rank": rank,
        "skipped": trainer.skipped,
        "signal": None if sigs.received is None else signal.Signals(sigs.received).name,
        "threads": torch.get_num_threads(),
    }
    if rank == 0:
        tail = losses[-20:]
        final = f"final loss {sum(tail) / len(tail):.4f}; " if tail else ""
        log(
            f"trained {steps} steps in {run_elapsed:.1f} s "
            f"({summary['samples_per_s']:.1f} samples/s, {params / 1e6:.2f} M params), "
            f"{final}checkpoint: {ckpt} (step {trainer.step_count})"
            + (f"; {trainer.skipped} step(s) with a non-finite loss skipped"
               if trainer.skipped else "")
        )
    summary["trainer"] = trainer
    return summary
