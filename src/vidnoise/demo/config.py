"""The demo's training configuration: one frozen dataclass, every default derived from it.

``stages`` decides the rest: the stage embeddings of the model, the even stage boundaries
``(0, 1/K, ..., 1)`` of the pyramid schedule and the sample ratios (see
:func:`default_sample_ratios`). :meth:`TrainConfig.check` is run on every new run, resume
and checkpoint load, so a bad value is one clear line, never a failure deep in torch.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace

import torch

from vidnoise._checks import check_float, check_int
from vidnoise.demo._errors import DemoError
from vidnoise.demo.model import ModelConfig

__all__ = ["TrainConfig", "default_sample_ratios", "stage_range", "SEED_MAX", "RESUMABLE"]

#: Largest seed: seeds are 64-bit signed integers in checkpoints and generators.
SEED_MAX = 2**63 - 1

#: Config fields a resumed run may change (the rest fix the model, data or schedule).
RESUMABLE = ("steps", "minutes")


def default_sample_ratios(stages: int) -> tuple[int, ...]:
    """Columns of the batch per stage: Pyramid-Flow's ``(1, 2, 1)`` at 3 stages, in general
    1 for the first and last stage and 2 for each middle one (``(1,)``, ``(1, 1)``,
    ``(1, 2, 1)``, ``(1, 2, 2, 1)``, ...)."""
    k = check_int("stages", stages, minimum=1)
    return (1,) if k == 1 else (1, *([2] * (k - 2)), 1)


def stage_range(stages: int) -> tuple[float, ...]:
    """Even stage boundaries on the σ grid: ``(0, 1/K, ..., 1)``."""
    k = check_int("stages", stages, minimum=1)
    return tuple(i / k for i in range(k + 1))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint).

    ``data`` is ``"shapes"`` (:class:`~vidnoise.demo.data.MovingShapes`) or a folder of videos
    (:class:`~vidnoise.demo.data.VideoFolder`). ``batch_size`` is per process and must be a
    multiple of ``sum(sample_ratios)`` for pyramidal training; ``sample_ratios=None`` means
    :func:`default_sample_ratios` of ``stages``, and ``model=None`` the default
    :class:`~vidnoise.demo.model.ModelConfig` with one stage embedding per stage. Training
    stops after ``steps`` optimizer steps in total or ``minutes`` of wall time, whichever
    comes first (at least one must be set).
    ``max_bad_steps``: consecutive steps with a non-finite loss that are skipped (no update)
    before the run stops with an error.
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
    sample_ratios: tuple[int, ...] | None = None
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
    max_bad_steps: int = 3
    model: ModelConfig | None = None

    def __post_init__(self):
        if self.model is None and isinstance(self.stages, int):
            object.__setattr__(self, "model", ModelConfig(stages=1 if self.flat else self.stages))
        if self.sample_ratios is None and isinstance(self.stages, int) and self.stages >= 1:
            object.__setattr__(self, "sample_ratios", default_sample_ratios(self.stages))
        elif self.sample_ratios is not None:
            object.__setattr__(self, "sample_ratios", tuple(self.sample_ratios))

    @property
    def model_stages(self) -> int:
        """Stage embeddings the model needs: 1 for flat training, else ``stages``."""
        return 1 if self.flat else self.stages

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sample_ratios"] = list(self.sample_ratios or ())
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise DemoError(f"config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "sample_ratios" in d and d["sample_ratios"] is not None:
            d["sample_ratios"] = tuple(d["sample_ratios"])
        m = d.get("model", {})
        if not isinstance(m, dict):
            raise DemoError(f"model config must be a JSON object, got {type(m).__name__}")
        d["model"] = ModelConfig.from_dict(m)
        return cls(**d)

    def with_overrides(self, **changes) -> TrainConfig:
        return replace(self, **changes)

    def check(self) -> TrainConfig:
        """Raise :class:`DemoError` (one clear line) for bad values; return self."""
        try:
            check_int("size", self.size, minimum=1)
            check_int("frames", self.frames, minimum=1)
            check_int("batch_size", self.batch_size, minimum=1)
            check_int("stages", self.stages, minimum=1)
            check_int("seed", self.seed, minimum=0, maximum=SEED_MAX)
            check_int("data_seed", self.data_seed, minimum=0, maximum=SEED_MAX)
            check_int("max_shapes", self.max_shapes, minimum=1)
            check_int("warmup", self.warmup, minimum=0)
            check_int("max_bad_steps", self.max_bad_steps, minimum=0)
            check_float("lr", self.lr, low=0.0, low_open=True)
            check_float("weight_decay", self.weight_decay, low=0.0)
            check_float("gamma", self.gamma, low=-1.0, high=1.0)
            check_float("decay", self.decay, low=0.0, high=1.0)
            check_float("grad_clip", self.grad_clip, low=0.0, low_open=True)
            check_float("ema_decay", self.ema_decay, low=0.0, high=1.0, high_open=True)
            if self.steps is not None:
                check_int("steps", self.steps, minimum=1)
            if self.minutes is not None:
                check_float("minutes", self.minutes, low=0.0, low_open=True)
            for name in ("flat", "i2v"):
                if not isinstance(getattr(self, name), bool):
                    raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
            if not isinstance(self.data, str) or not self.data:
                raise TypeError(f"data must be 'shapes' or a folder, got {self.data!r}")
            m = self.model
            for name in ("channels", "width", "blocks", "emb_dim", "groups", "heads",
                         "stages"):
                check_int(f"model.{name}", getattr(m, name), minimum=1)
            check_int("model.cond_channels", m.cond_channels, minimum=0)
            check_int("model.attention_levels", m.attention_levels, minimum=0)
            if not m.mults or not all(isinstance(v, int) and v >= 1 for v in m.mults):
                raise ValueError(f"model.mults must be positive ints, got {m.mults!r}")
            if m.emb_dim % 2:
                raise ValueError(f"model.emb_dim must be even, got {m.emb_dim}")
        except (TypeError, ValueError) as exc:
            raise DemoError(str(exc)) from None
        if self.weight_decay > 0 and self.lr * self.weight_decay >= 1:
            raise DemoError(
                f"lr {self.lr:g} is too large: AdamW multiplies the weights by "
                f"1 - lr·weight_decay each step, which must stay > 0 "
                f"(lr < {1 / self.weight_decay:g} with weight decay {self.weight_decay:g})"
            )
        if self.steps is None and self.minutes is None:
            raise DemoError("give a number of steps or a time budget in minutes (or both)")
        if self.i2v and self.model.cond_channels != self.model.channels:
            raise DemoError(
                f"i2v needs a model with cond_channels = channels ({self.model.channels}), "
                f"got {self.model.cond_channels}"
            )
        stages = self.model_stages
        mult = 2 ** (len(self.model.mults) - 1) * 2 ** (stages - 1)
        if self.size % mult:
            lo = (self.size // mult) * mult
            raise DemoError(
                f"size {self.size} cannot be halved {stages - 1} time(s) for the pyramid and "
                f"{len(self.model.mults) - 1} more in the model: it must be a multiple of "
                f"{mult} (e.g. {lo or mult} or {lo + mult})"
            )
        if self.model.stages < stages:
            raise DemoError(
                f"the model has {self.model.stages} stage embeddings but training uses "
                f"{stages} stages"
            )
        if not self.flat:
            r = self.sample_ratios
            if len(r) != self.stages or not all(isinstance(v, int) and v >= 0 for v in r) \
                    or sum(r) < 1:
                raise DemoError(
                    f"sample_ratios {tuple(r)} must be {self.stages} non-negative ints (one "
                    f"per stage) with a positive sum"
                )
            if self.batch_size % sum(r):
                s = sum(r)
                raise DemoError(
                    f"batch size {self.batch_size} must be a multiple of sum(sample_ratios) = "
                    f"{s} (sample ratios {tuple(r)}; e.g. {-(-self.batch_size // s) * s})"
                )
        self._check_memory()
        self._probe_shapes()
        return self

    def _check_memory(self) -> None:
        """Refuse sizes whose activations cannot fit in this machine's memory."""
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover
            return
        m = self.model
        # the first level alone keeps ~ 6 tensors of width channels per block for backward
        need = 4 * 6 * (m.blocks + 1) * m.width * m.mults[0] * self.batch_size * self.frames \
            * self.size**2
        need = max(need, 4 * self.batch_size * m.channels * self.frames * self.size**2 * 4)
        if need > total:
            raise DemoError(
                f"size {self.size}, {self.frames} frames, batch {self.batch_size} and width "
                f"{m.width} need about {need / 2**30:.0f} GiB for training, this machine "
                f"has {total / 2**30:.0f} GiB: make them smaller"
            )

    def _probe_shapes(self) -> None:
        """Run the model on meta tensors at the coarsest stage: shape problems (GroupNorm on
        one value per group, ...) become one line here, not a failure at the first step."""
        from vidnoise.demo.model import TinyVideoUNet

        k_all = self.model_stages
        ratios = (1,) if self.flat else self.sample_ratios
        with torch.device("meta"):
            model = TinyVideoUNet(self.model).train()
        for k, r in enumerate(ratios):
            n = self.batch_size * r // sum(ratios)  # this stage's share of the batch
            if n == 0:
                continue
            s = self.size >> (k_all - 1 - k)
            try:
                with torch.device("meta"):
                    x = torch.empty(n, self.model.channels, self.frames, s, s)
                    model(x, torch.zeros(n), k if not self.flat else 0)
            except (ValueError, RuntimeError) as exc:
                raise DemoError(
                    f"the model cannot run on {self.frames} frame(s) of {s}x{s} (stage {k}, "
                    f"{n} clip(s) of the batch) with width {self.model.width}: "
                    f"{str(exc).splitlines()[0]} (use more frames, a larger width, size or "
                    f"batch, or fewer stages)"
                ) from None

