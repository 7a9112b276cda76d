"""One training process of the demo: model, EMA, optimizer, generator, one step.

One step, pyramidal (the template to copy; :meth:`vidnoise.pyramid.PyramidSchedule.training_inputs`
does the noise side)::

    x0 = clips (B, C, T, H, W) in [-1, 1]
    for sb in schedule.training_inputs(x0, stage_shares=(1, 2, 1), generator=g):
        # sb.noisy = r·start + (1-r)·end at stage sb.stage's resolution, sb.target = start - end
        loss += |model(sb.noisy, sb.timestep, sb.stage) - sb.target|² · n_k / B

One step, flat (the baseline): σ from :func:`vidnoise.sigma_samplers.uniform`, the noisy clip and
the target from :class:`vidnoise.paths.FlowPath` (``add_noise``, ``velocity``), the model's
timestep from :func:`vidnoise.conventions.sigma_to_timestep`, stage 0.

Then AdamW (linear warm-up, constant, linear decay to 10 % over the last 40 % of the run),
gradient-norm clipping, and an EMA of the weights
(``ema ← d·ema + (1-d)·w`` with ``d = min(ema_decay, (1+step)/(10+step))``). A step whose
loss or gradient norm is not finite changes nothing (no update, no EMA, the step is not
counted); ``max_bad_steps`` of them in a row stop the run.

Everything random comes from one ``torch.Generator`` per process, seeded from
``(seed, rank)``: clip indices, then the noise and ratios of the step. Its state is saved in
the checkpoint, so a resumed run continues bit-for-bit (2 + 2 steps == 4 steps).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidnoise.demo._errors import DemoError
from vidnoise.demo.checkpoint import (
    checkpoint_mismatch,
    decode_rng,
    encode_rng,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    save_checkpoint,
)
from vidnoise.demo.config import TrainConfig, stage_range
from vidnoise.demo.distributed import barrier, dist_info, gather_objects
from vidnoise.demo.model import TinyVideoUNet

__all__ = ["Trainer", "NonFiniteLoss", "build_dataset", "build_schedule", "load_model",
           "generator_seed"]


class NonFiniteLoss(DemoError):
    """The loss stayed non-finite for ``max_bad_steps`` steps in a row (the run diverged)."""


def generator_seed(seed: int, index: int, stride: int = 1_000_003) -> int:
    """A 64-bit generator seed for item ``index`` of run ``seed``: ``(seed·stride + index)``
    modulo 2^64 (any seed up to 2^63 - 1 works)."""
    return (seed * stride + index) % 2**64


def build_dataset(cfg: TrainConfig, *, seed: int | None = None, log=None):
    """The training data of ``cfg`` (``seed`` overrides the MovingShapes seed)."""
    from vidnoise.demo.data import MovingShapes, VideoFolder

    if cfg.data == "shapes":
        return MovingShapes(
            size=cfg.size,
            frames=cfg.frames,
            channels=cfg.model.channels,
            max_shapes=cfg.max_shapes,
            seed=cfg.data_seed if seed is None else seed,
        )
    data = VideoFolder(cfg.data, size=cfg.size, frames=cfg.frames)
    if log is not None:
        log(data.summary())
    return data


def build_schedule(cfg: TrainConfig):
    """The :class:`~vidnoise.pyramid.PyramidSchedule` of ``cfg`` (even stage ranges)."""
    from vidnoise.pyramid import PyramidSchedule

    return PyramidSchedule(stages=cfg.stages, stage_range=stage_range(cfg.stages),
                           gamma=cfg.gamma)


@dataclass(frozen=True)
class FlatBatch:
    """The flat baseline's inputs, with the attributes of a pyramid ``StageBatch`` that the
    loss reads (stage 0, every sample)."""

    stage: int
    indices: torch.Tensor
    noisy: torch.Tensor
    target: torch.Tensor
    timestep: torch.Tensor


class _LossModule(nn.Module):
    """Wraps the model so one training step is one forward call (what DDP expects).

    ``forward(batches, total, cond)`` takes the stage inputs (``StageBatch`` objects or one
    :class:`FlatBatch`) and returns the mean squared error over the whole batch: each
    stage's mean weighted by its share of the samples.
    """

    def __init__(self, model: TinyVideoUNet):
        super().__init__()
        self.model = model

    def forward(self, batches, total: int, cond=None):
        loss = None
        for sb in batches:
            if sb.noisy.shape[0] == 0:
                continue
            c = None if cond is None else cond[sb.indices]
            pred = self.model(sb.noisy, sb.timestep, sb.stage, cond=c)
            part = F.mse_loss(pred.float(), sb.target.float()) * (sb.noisy.shape[0] / total)
            loss = part if loss is None else loss + part
        return loss


class Trainer:
    """Model, EMA, optimizer, generator and step of one training run (one process).

    ``Trainer(cfg)`` starts fresh; ``Trainer.from_checkpoint(path)`` continues one.
    ``step()`` runs one optimizer step and returns the loss (a float, read after the step).
    """

    def __init__(self, cfg: TrainConfig, *, device=None, dataset=None, log=None):
        self.cfg = cfg.check()
        self.rank, self.world = dist_info()
        self.device = torch.device(device or "cpu")
        with torch.random.fork_rng(devices=[]):  # initial weights: same on every rank
            torch.manual_seed(cfg.seed)
            self.model = TinyVideoUNet(cfg.model).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.generator = torch.Generator(self.device).manual_seed(
            generator_seed(cfg.seed, 7919 * self.rank)
        )
        self.data = dataset if dataset is not None else build_dataset(cfg, log=log)
        self.schedule = None if cfg.flat else build_schedule(cfg)
        self.step_count = 0
        self.bad_steps = 0  # consecutive non-finite steps
        self.skipped = 0  # non-finite steps skipped in this run
        self.elapsed = 0.0  # training seconds over all runs (resumes included)
        self.run_elapsed = 0.0  # training seconds of this run (for the time-based decay)
        self.loss_module = _LossModule(self.model)
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.loss_module)

    # ------------------------------------------------------------------ one step
    def _lr(self) -> float:
        """Linear warm-up over ``warmup`` steps, then constant, then a linear decay to 10 %
        over the last ``decay`` fraction of the run. The run's progress is
        ``max(step / steps, elapsed / budget)`` (steps-only runs are deterministic; a time
        budget makes the decay follow the wall clock)."""
        c = self.cfg
        lr = c.lr * min(1.0, (self.step_count + 1) / c.warmup) if c.warmup > 0 else c.lr
        if c.decay > 0:
            progress = 0.0
            if c.steps is not None:
                progress = self.step_count / c.steps
            if c.minutes is not None:
                progress = max(progress, self.run_elapsed / (60.0 * c.minutes))
            start = 1.0 - c.decay
            if progress > start:
                lr *= 1.0 - 0.9 * min(1.0, (progress - start) / c.decay)
        return lr

    def batch(self) -> torch.Tensor:
        """The next batch of clips (B, C, T, H, W), indices drawn from the generator."""
        n = len(self.data)
        idx = torch.randint(0, n, (self.cfg.batch_size,), generator=self.generator,
                            device=self.generator.device)
        return self.data.batch(idx.tolist()).to(self.device)

    def inputs(self, x0: torch.Tensor):
        """(stage inputs, condition or None) for clean clips ``x0``.

        With ``i2v`` the first frame, noise-augmented by
        :class:`vidnoise.conditioning.ImageConditionAugment` (``image + σ·ε``, 5 % dropout,
        zero frames after it), is the condition; the model resizes it to each stage.
        """
        g = self.generator
        cond = None
        if self.cfg.i2v:
            from vidnoise.conditioning import ImageConditionAugment

            cond = ImageConditionAugment().augment(
                x0[:, :, :1], num_frames=x0.shape[2], generator=g
            ).latents
        if self.schedule is not None:
            batches = self.schedule.training_inputs(
                x0, stage_shares=self.cfg.sample_ratios, generator=g
            )
            return list(batches), cond
        from vidnoise.conventions import sigma_to_timestep
        from vidnoise.noise import randn
        from vidnoise.paths import FlowPath
        from vidnoise.sigma_samplers import uniform

        b = x0.shape[0]
        sigma = uniform(b, generator=g, device=x0.device)  # noise fraction in [0, 1)
        eps = randn(x0.shape, generator=g, device=x0.device)
        path = FlowPath()
        batch = FlatBatch(
            stage=0,
            indices=torch.arange(b, device=x0.device),
            noisy=path.add_noise(x0, eps, sigma),
            target=path.velocity(x0, eps),
            timestep=sigma_to_timestep(sigma),
        )
        return [batch], cond

    def step(self) -> float:
        """One optimizer step; returns the loss. A non-finite loss or gradient changes
        nothing and counts as a bad step; :class:`NonFiniteLoss` after ``max_bad_steps``
        of them in a row."""
        for group in self.opt.param_groups:
            group["lr"] = self._lr()
        x0 = self.batch()
        batches, cond = self.inputs(x0)
        module = self.ddp if self.ddp is not None else self.loss_module
        loss = module(batches, x0.shape[0], cond)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        value = float(loss.detach())
        if not (torch.isfinite(gnorm) and value == value and abs(value) != float("inf")):
            self.opt.zero_grad(set_to_none=True)
            self.bad_steps += 1
            self.skipped += 1
            if self.bad_steps > self.cfg.max_bad_steps:
                raise NonFiniteLoss(
                    f"the loss is not finite ({value}) at step {self.step_count + 1} "
                    f"({self.bad_steps} steps in a row): training diverged; lower --lr "
                    f"(now {self.cfg.lr:g}); the last checkpoint is kept"
                )
            return value
        self.bad_steps = 0
        self.opt.step()
        self.step_count += 1
        d = min(self.cfg.ema_decay, (1 + self.step_count) / (10 + self.step_count))
        with torch.no_grad():
            for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                pe.lerp_(pm, 1.0 - d)  # ema ← d·ema + (1-d)·w
        return value

    def finite(self) -> bool:
        """Whether every weight, EMA weight and optimizer tensor is finite."""
        tensors, _ = self.state_tensors()
        return all(bool(torch.isfinite(t).all()) for t in tensors.values()
                   if t.is_floating_point())

    # ------------------------------------------------------------------ checkpoints
    def state_tensors(self) -> tuple[dict, dict]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt_t, opt_rest = optimizer_to_flat(self.opt)
        tensors.update(opt_t)
        return tensors, opt_rest

    def save(self, path) -> Path | None:
        """Write a checkpoint (rank 0 only; every rank must call this under DDP).

        Refuses (:class:`~vidnoise.demo.DemoError`) weights that are not finite: a good
        checkpoint is never replaced by a diverged one.
        """
        rng = gather_objects(encode_rng(self.generator.get_state()), self.world)
        out = None
        if self.rank == 0:
            tensors, opt_rest = self.state_tensors()
            bad = [k for k, t in tensors.items()
                   if t.is_floating_point() and not bool(torch.isfinite(t).all())]
            if bad:
                raise NonFiniteLoss(f"not saving a checkpoint with non-finite tensors "
                                    f"({len(bad)} of {len(tensors)}, e.g. {bad[0]})")
            state = {
                "config": self.cfg.to_dict(),
                "step": self.step_count,
                "elapsed_s": self.elapsed + self.run_elapsed,
                "world_size": self.world,
                "optimizer": opt_rest,
                "rng": {"generators": rng, "torch": encode_rng(torch.get_rng_state())},
                "torch_version": torch.__version__,
                "saved_ns": time.time_ns(),
            }
            out = save_checkpoint(path, tensors, state)
        barrier(self.world)
        return out

    @classmethod
    def from_checkpoint(cls, path, *, device=None, overrides: dict | None = None,
                        log=None) -> Trainer:
        """Continue the run saved at ``path`` (``overrides``: e.g. new ``steps``/``minutes``)."""
        tensors, state = load_checkpoint(path)
        try:
            d = dict(state["config"])
            d.update(overrides or {})
            cfg = TrainConfig.from_dict(d).check()
        except (KeyError, TypeError, ValueError) as exc:
            raise checkpoint_mismatch(path, exc) from None
        self = cls(cfg, device=device, log=log)
        try:
            self.load_state(tensors, state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise checkpoint_mismatch(path, exc) from None
        return self

    def load_state(self, tensors: dict, state: dict) -> None:
        model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        ema_sd = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        self.model.load_state_dict(model_sd)
        self.ema.load_state_dict(ema_sd)
        optimizer_from_flat(self.opt, tensors, state["optimizer"])
        self.step_count = int(state["step"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        gens = state["rng"]["generators"]
        if len(gens) != self.world:
            raise DemoError(
                f"the checkpoint was written by {len(gens)} process(es); resume it with the "
                f"same number (now {self.world})"
            )
        self.generator.set_state(decode_rng(gens[self.rank]))
        torch.set_rng_state(decode_rng(state["rng"]["torch"]))


def load_model(path, *, ema: bool = True, device=None) -> tuple[TinyVideoUNet, TrainConfig, dict]:
    """(model in eval mode, its TrainConfig, the checkpoint state) from a checkpoint folder.

    ``ema=True`` loads the EMA weights (what sampling uses), else the raw weights. The
    config gets the same checks as a new run; non-finite weights are refused.
    """
    tensors, state = load_checkpoint(path)
    try:
        cfg = TrainConfig.from_dict(state["config"]).check()
        model = TinyVideoUNet(cfg.model)
        prefix = "ema." if ema else "model."
        weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        model.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise checkpoint_mismatch(path, exc) from None
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DemoError(f"checkpoint {str(path)!r} has non-finite weights ({len(bad)} of "
                        f"{len(weights)} tensors, e.g. {prefix}{bad[0]}): it cannot be sampled")
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model, cfg, state
