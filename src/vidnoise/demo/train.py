"""Training for the demo: pyramidal flow matching (or plain flow matching with ``flat``).

One step, pyramidal (the template to copy; :meth:`vidnoise.pyramid.PyramidSchedule.training_inputs`
does the noise side)::

    x0 = clips (B, C, T, H, W) in [-1, 1]
    for sb in schedule.training_inputs(x0, sample_ratios=(1, 2, 1), generator=g):
        # sb.noisy = r·start + (1-r)·end at stage sb.stage's resolution, sb.target = start - end
        loss += |model(sb.noisy, sb.timestep, sb.stage) - sb.target|² · n_k / B

One step, flat (the baseline): ``σ ~ U[0, 1)``, ``x = (1-σ)·x0 + σ·ε``
(:class:`vidnoise.paths.FlowPath`), target ``v = ε - x0``, timestep ``1000·σ``, stage 0.

Then AdamW (linear warm-up, constant, linear decay to 10 % over the last 40 % of the run),
gradient-norm clipping, and an EMA of the weights
(``ema ← d·ema + (1-d)·w`` with ``d = min(ema_decay, (1+step)/(10+step))``).

Everything random comes from one ``torch.Generator`` per process, seeded from
``(seed, rank)``: clip indices, then the noise and ratios of the step. Its state is saved in
the checkpoint, so ``resume`` continues bit-for-bit (2 + 2 steps == 4 steps).

Distributed: under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE > 1``) the loss module is
wrapped in :class:`torch.nn.parallel.DistributedDataParallel` (gloo on CPU, nccl on CUDA),
each rank draws its own clips and noise (per-rank seeds), gradients are averaged by DDP, and
only rank 0 writes checkpoints (it gathers every rank's generator state first).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidnoise._checks import check_float, check_int
from vidnoise.demo import DemoError
from vidnoise.demo.checkpoint import (
    decode_rng,
    encode_rng,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    save_checkpoint,
)
from vidnoise.demo.model import ModelConfig, TinyVideoUNet

__all__ = ["TrainConfig", "Trainer", "train", "build_dataset", "build_schedule", "load_model"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint).

    ``data`` is ``"shapes"`` (:class:`~vidnoise.demo.data.MovingShapes`) or a folder of videos
    (:class:`~vidnoise.demo.data.VideoFolder`). ``batch_size`` is per process and must be a
    multiple of ``sum(sample_ratios)`` for pyramidal training. Training stops after ``steps``
    optimizer steps in total or ``minutes`` of wall time, whichever comes first (at least one
    of them must be set).
    """

    data: str = "shapes"
    size: int = 32
    frames: int = 8
    max_shapes: int = 2
    data_seed: int = 0
    flat: bool = False
    i2v: bool = False
    stages: int = 3
    gamma: float = 1 / 3
    sample_ratios: tuple[int, ...] = (1, 2, 1)
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 50
    decay: float = 0.4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    seed: int = 0
    steps: int | None = None
    minutes: float | None = 6.0
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sample_ratios"] = list(self.sample_ratios)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["sample_ratios"] = tuple(d.get("sample_ratios", cls.sample_ratios))
        d["model"] = ModelConfig.from_dict(d.get("model", {}))
        return cls(**d)

    def check(self) -> TrainConfig:
        """Raise :class:`DemoError` (one clear line) for bad values; return self."""
        try:
            check_int("size", self.size, minimum=1)
            check_int("frames", self.frames, minimum=1)
            check_int("batch_size", self.batch_size, minimum=1)
            check_int("stages", self.stages, minimum=1)
            check_int("seed", self.seed, minimum=0)
            check_float("lr", self.lr, low=0.0, low_open=True)
            check_float("decay", self.decay, low=0.0, high=1.0)
            check_float("grad_clip", self.grad_clip, low=0.0, low_open=True)
            check_float("ema_decay", self.ema_decay, low=0.0, high=1.0, high_open=True)
            if self.steps is not None:
                check_int("steps", self.steps, minimum=1)
            if self.minutes is not None:
                check_float("minutes", self.minutes, low=0.0, low_open=True)
        except (TypeError, ValueError) as exc:
            raise DemoError(str(exc)) from None
        if self.steps is None and self.minutes is None:
            raise DemoError("give a number of steps or a time budget in minutes (or both)")
        if self.i2v and self.model.cond_channels != self.model.channels:
            raise DemoError(
                f"i2v needs a model with cond_channels = channels ({self.model.channels}), "
                f"got {self.model.cond_channels}"
            )
        stages = 1 if self.flat else self.stages
        mult = 2 ** (len(self.model.mults) - 1) * 2 ** (stages - 1)
        if self.size % mult:
            lo = (self.size // mult) * mult
            raise DemoError(
                f"size {self.size} cannot be halved {stages - 1} time(s) for the pyramid and "
                f"{len(self.model.mults) - 1} more in the model: it must be a multiple of "
                f"{mult} (e.g. {lo or mult} or {lo + mult})"
            )
        if not self.flat and self.model.stages < self.stages:
            raise DemoError(
                f"the model has {self.model.stages} stage embeddings but training uses "
                f"{self.stages} stages"
            )
        if not self.flat:
            if len(self.sample_ratios) != self.stages:
                raise DemoError(
                    f"sample_ratios {tuple(self.sample_ratios)} must have one entry per stage "
                    f"({self.stages})"
                )
            if self.batch_size % sum(self.sample_ratios):
                raise DemoError(
                    f"batch size {self.batch_size} must be a multiple of sum(sample_ratios) = "
                    f"{sum(self.sample_ratios)}"
                )
        return self


def build_dataset(cfg: TrainConfig, *, seed: int | None = None):
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
    return VideoFolder(cfg.data, size=cfg.size, frames=cfg.frames)


def build_schedule(cfg: TrainConfig):
    """The :class:`~vidnoise.pyramid.PyramidSchedule` of ``cfg`` (even stage ranges)."""
    from vidnoise.pyramid import PyramidSchedule

    k = cfg.stages
    return PyramidSchedule(
        stages=k, stage_range=tuple(i / k for i in range(k + 1)), gamma=cfg.gamma
    )


def _dist_info() -> tuple[int, int]:
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, ws


class _LossModule(nn.Module):
    """Wraps the model so one training step is one forward call (what DDP expects).

    ``forward(batches)`` takes the list of stage inputs (:class:`~vidnoise.pyramid.StageBatch`
    or the flat batch) and returns the mean squared error over the whole batch:
    each stage's mean weighted by its share of the samples.
    """

    def __init__(self, model: TinyVideoUNet):
        super().__init__()
        self.model = model

    def forward(self, batches, total: int):
        loss = None
        for noisy, timestep, stage, target, cond in batches:
            if noisy.shape[0] == 0:
                continue
            pred = self.model(noisy, timestep, stage, cond=cond)
            part = F.mse_loss(pred.float(), target.float()) * (noisy.shape[0] / total)
            loss = part if loss is None else loss + part
        return loss


class Trainer:
    """Model, EMA, optimizer, generator and step of one training run (one process).

    ``Trainer(cfg)`` starts fresh; ``Trainer.from_checkpoint(path)`` continues one.
    ``step()`` runs one optimizer step and returns the loss (a float, read after the step).
    """

    def __init__(self, cfg: TrainConfig, *, device=None, dataset=None):
        self.cfg = cfg.check()
        self.rank, self.world = _dist_info()
        self.device = torch.device(device or "cpu")
        with torch.random.fork_rng(devices=[]):  # initial weights: same on every rank
            torch.manual_seed(cfg.seed)
            self.model = TinyVideoUNet(cfg.model).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.generator = torch.Generator(self.device).manual_seed(
            cfg.seed * 1_000_003 + 7919 * self.rank
        )
        self.data = dataset if dataset is not None else build_dataset(cfg)
        self.schedule = None if cfg.flat else build_schedule(cfg)
        self.step_count = 0
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

    def inputs(self, x0: torch.Tensor) -> list[tuple]:
        """(noisy, timestep, stage, target, cond) per stage for clean clips ``x0``.

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
                x0, sample_ratios=self.cfg.sample_ratios, generator=g
            )
            return [
                (sb.noisy, sb.timestep, sb.stage, sb.target,
                 None if cond is None else cond[sb.indices])
                for sb in batches
            ]
        from vidnoise.noise import rand, randn

        b = x0.shape[0]
        sigma = rand((b,), generator=g, device=x0.device)  # σ ~ U[0, 1): noise fraction
        eps = randn(x0.shape, generator=g, device=x0.device)
        s = sigma.view(b, 1, 1, 1, 1)
        noisy = (1 - s) * x0 + s * eps  # x_σ = (1-σ)·x0 + σ·ε
        return [(noisy, 1000.0 * sigma, 0, eps - x0, cond)]  # target v = ε - x0

    def step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = self._lr()
        x0 = self.batch()
        batches = self.inputs(x0)
        module = self.ddp if self.ddp is not None else self.loss_module
        loss = module(batches, x0.shape[0])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step_count += 1
        d = min(self.cfg.ema_decay, (1 + self.step_count) / (10 + self.step_count))
        with torch.no_grad():
            for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                pe.lerp_(pm, 1.0 - d)  # ema ← d·ema + (1-d)·w
        return float(loss.detach())

    # ------------------------------------------------------------------ checkpoints
    def state_tensors(self) -> dict:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt_t, opt_rest = optimizer_to_flat(self.opt)
        tensors.update(opt_t)
        return tensors, opt_rest

    def save(self, path) -> Path | None:
        """Write a checkpoint (rank 0 only; every rank must call this under DDP)."""
        rng = [encode_rng(self.generator.get_state())]
        if self.world > 1:
            import torch.distributed as dist

            gathered = [None] * self.world
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        out = None
        if self.rank == 0:
            tensors, opt_rest = self.state_tensors()
            state = {
                "config": self.cfg.to_dict(),
                "step": self.step_count,
                "elapsed_s": self.elapsed,
                "world_size": self.world,
                "optimizer": opt_rest,
                "rng": {"generators": rng, "torch": encode_rng(torch.get_rng_state())},
                "torch_version": torch.__version__,
            }
            out = save_checkpoint(path, tensors, state)
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return out

    @classmethod
    def from_checkpoint(cls, path, *, device=None, overrides: dict | None = None) -> Trainer:
        """Continue the run saved at ``path`` (``overrides``: e.g. new ``steps``/``minutes``)."""
        tensors, state = load_checkpoint(path)
        try:
            d = dict(state["config"])
            d.update(overrides or {})
            cfg = TrainConfig.from_dict(d)
            self = cls(cfg, device=device)
            self.load_state(tensors, state)
        except DemoError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise DemoError(
                f"checkpoint {str(path)!r} does not match this code: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
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

    ``ema=True`` loads the EMA weights (what sampling uses), else the raw weights.
    """
    tensors, state = load_checkpoint(path)
    try:
        cfg = TrainConfig.from_dict(state["config"])
        model = TinyVideoUNet(cfg.model)
        prefix = "ema." if ema else "model."
        model.load_state_dict(
            {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise DemoError(
            f"checkpoint {str(path)!r} does not match this code: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model, cfg, state


def _init_distributed(device: str | None) -> str:
    """Start the process group under torchrun; returns the device to use."""
    import torch.distributed as dist

    rank, ws = _dist_info()
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if ws > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device or "cpu"


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
) -> dict:
    """Train until ``cfg.steps`` or ``cfg.minutes``; write ``<out>/checkpoint``; return a summary.

    ``resume`` continues a checkpoint (its config, with ``overrides`` such as a new ``steps``
    or ``minutes`` applied). ``checkpoint_every`` > 0 also saves every that many steps.
    The summary has ``steps``, ``seconds``, ``losses`` (per step), ``samples_per_s``,
    ``checkpoint``, ``params``.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    rank, ws = _dist_info()
    owns_group = False
    if ws > 1:
        import torch.distributed as dist

        owns_group = not dist.is_initialized()
    device = _init_distributed(device) if ws > 1 else (device or "cpu")
    if resume is not None:
        trainer = Trainer.from_checkpoint(resume, device=device, overrides=overrides)
    else:
        if cfg is None:
            raise DemoError("give a config or a checkpoint to resume")
        trainer = Trainer(cfg, device=device)
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
    run_elapsed = 0.0
    while True:
        if target is not None and trainer.step_count >= target:
            break
        stop = budget is not None and run_elapsed >= budget
        if ws > 1:  # every rank stops at the same step
            import torch.distributed as dist

            flag = torch.tensor([1.0 if stop else 0.0], device=device)
            dist.all_reduce(flag)
            stop = bool(flag.item() > 0)
        if stop:
            break
        loss = trainer.step()
        losses.append(loss)
        run_elapsed = trainer.run_elapsed = time.perf_counter() - t0
        if bar is not None:
            rate = (trainer.step_count - start_step) * cfg.batch_size * ws / max(run_elapsed, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.1f}", refresh=False)
        if checkpoint_every and trainer.step_count % checkpoint_every == 0:
            trainer.save(ckpt)
    if bar is not None:
        bar.close()
    trainer.elapsed += run_elapsed
    trainer.save(ckpt)
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
    }
    if rank == 0:
        log(
            f"trained {steps} steps in {run_elapsed:.1f} s "
            f"({summary['samples_per_s']:.1f} samples/s, {params / 1e6:.2f} M params), "
            f"final loss {sum(losses[-20:]) / max(len(losses[-20:]), 1):.4f}; "
            f"checkpoint: {ckpt}"
        )
    summary["trainer"] = trainer
    return summary
