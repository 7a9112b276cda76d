"""A tiny space-time network for the demo: a (2+1)-D convolutional U-Net.

``TinyVideoUNet(x, timestep, stage, cond=None) -> velocity``, with ``x`` of shape
(B, C, T, H, W). It is fully convolutional, so the same weights run at every pyramid
resolution (H and W must be multiples of ``2 ** (len(mults) - 1)``; T is free). Each residual
block is a spatial 1x3x3 convolution followed by a temporal 3x1x1 convolution, with the
block's features modulated (FiLM: ``h * (1 + scale) + shift``) by an embedding of

* the timestep: Pyramid-Flow's pseudo-time in [0, 1000] for pyramid stages (1000 = pure
  noise), or ``1000·σ`` for plain flow matching (σ = noise fraction, so both run 1000 -> 0
  while sampling); sinusoidal features then a two-layer MLP;
* the pyramid stage (a learned embedding per stage, coarsest = 0).

The output is the velocity: ``ε - x0`` for flow matching, ``start - end`` for a pyramid
stage (the same direction: from data towards noise). The last convolution is zero-initialised,
so an untrained model predicts 0.

At the lowest resolution a temporal self-attention layer lets every frame see every other
frame (``attention=True``).

Optional image conditioning: ``cond_channels > 0`` adds input channels for a condition
tensor concatenated on the channel axis (:func:`vidnoise.conditioning.concat_condition`
builds it); the model resizes a full-resolution condition to the stage's resolution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from vidnoise._checks import check_int

__all__ = ["ModelConfig", "TinyVideoUNet", "timestep_embedding"]


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`TinyVideoUNet` (stored in every checkpoint)."""

    channels: int = 3
    cond_channels: int = 0
    width: int = 32
    mults: tuple[int, ...] = (1, 2, 4)
    blocks: int = 1
    stages: int = 3
    emb_dim: int = 128
    groups: int = 8
    attention: bool = True
    attention_levels: int = 1
    heads: int = 4

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mults"] = list(self.mults)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        d["mults"] = tuple(d.get("mults", cls.mults))
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of ``t`` (B,) in [0, 1000]: ``[cos(t·f_i), sin(t·f_i)]``."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(ch, groups)
    return nn.GroupNorm(g, ch)


class ResBlock(nn.Module):
    """(2+1)-D residual block: norm, SiLU, 1x3x3 conv, FiLM, norm, SiLU, 3x1x1 conv, + skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.spatial = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1))
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = _norm(cout, groups)
        self.temporal = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0))
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.spatial(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.temporal(F.silu(h))
        return self.skip(x) + h


class TemporalAttention(nn.Module):
    """Self-attention along time at every spatial position (pre-norm, residual).

    Used once, at the lowest resolution, so that every frame sees every other frame."""

    def __init__(self, ch: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = _norm(ch, groups)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = nn.Linear(ch, ch)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)  # (BHW, T, C)
        q, k, v = self.qkv(y).view(b * h * w, t, 3, self.heads, c // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2))
        y = self.proj(y.transpose(1, 2).reshape(b * h * w, t, c))
        return x + y.view(b, h, w, t, c).permute(0, 4, 3, 1, 2)


class TinyVideoUNet(nn.Module):
    """(2+1)-D conv U-Net: ``forward(x, timestep, stage=0, cond=None) -> velocity``.

    Args of ``forward``:
        x: (B, C, T, H, W) noisy video at any resolution whose H, W are multiples of
            ``2 ** (len(mults) - 1)``.
        timestep: a float or a (B,) / 0-d tensor in [0, 1000] (1000 = noise).
        stage: an int or a (B,) integer tensor in [0, stages).
        cond: optional (B, cond_channels, T, H', W') condition; resized to (H, W) if needed.
    """

    def __init__(self, config: ModelConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = ModelConfig(**kwargs)
        elif kwargs:
            raise TypeError("give either config or keyword arguments, not both")
        self.config = config
        c = config
        check_int("channels", c.channels, minimum=1)
        check_int("cond_channels", c.cond_channels, minimum=0)
        check_int("width", c.width, minimum=1)
        check_int("stages", c.stages, minimum=1)
        check_int("groups", c.groups, minimum=1)
        check_int("blocks", c.blocks, minimum=1)
        check_int("heads", c.heads, minimum=1)
        check_int("attention_levels", c.attention_levels, minimum=0)
        check_int("emb_dim", c.emb_dim, minimum=2)
        if c.emb_dim % 2:
            raise ValueError(f"emb_dim must be even (cos and sin halves), got {c.emb_dim}")
        if not c.mults or not all(isinstance(m, int) and m >= 1 for m in c.mults):
            raise ValueError(f"mults must be a non-empty tuple of ints >= 1, got {c.mults!r}")
        emb = c.emb_dim
        self.t_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.stage_emb = nn.Embedding(c.stages, emb)
        chans = [c.width * m for m in c.mults]
        self.stem = nn.Conv3d(c.channels + c.cond_channels, chans[0], (1, 3, 3), padding=(0, 1, 1))
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cur = chans[0]
        skips = []
        n_levels = len(chans)
        self.down_attn = nn.ModuleList()
        for i, ch in enumerate(chans):
            level = nn.ModuleList()
            for _ in range(c.blocks):
                level.append(ResBlock(cur, ch, emb, c.groups))
                cur = ch
                skips.append(cur)
            self.down.append(level)
            use = c.attention and i >= n_levels - c.attention_levels and i < n_levels - 1
            self.down_attn.append(TemporalAttention(cur, c.heads, c.groups) if use else
                                  nn.Identity())
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv3d(cur, cur, (1, 3, 3), (1, 2, 2), (0, 1, 1)))
        self.mid = ResBlock(cur, cur, emb, c.groups)
        self.attn = TemporalAttention(cur, c.heads, c.groups) if c.attention else None
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            level = nn.ModuleList()
            for _ in range(c.blocks):
                level.append(ResBlock(cur + skips.pop(), ch, emb, c.groups))
                cur = ch
            self.up.append(level)
            if i > 0:
                self.upsample.append(nn.Conv3d(cur, chans[i - 1], (1, 3, 3), padding=(0, 1, 1)))
                cur = chans[i - 1]
        self.out_norm = _norm(cur, c.groups)
        self.out = nn.Conv3d(cur, c.channels, (1, 3, 3), padding=(0, 1, 1))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this (``2 ** (len(mults) - 1)``)."""
        return 2 ** (len(self.config.mults) - 1)

    def embed(self, timestep, stage, batch: int, device) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=torch.float32, device=device)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != batch):
            raise ValueError(
                f"timestep must be a float, a 0-d tensor or a ({batch},) tensor (one per "
                f"sample), got shape {tuple(t.shape)}"
            )
        t = t.expand(batch) if t.dim() == 0 else t
        n = self.config.stages
        if isinstance(stage, torch.Tensor):
            if stage.dim() > 1 or (stage.dim() == 1 and stage.shape[0] != batch):
                raise ValueError(f"stage must be an int or a ({batch},) tensor, got shape "
                                 f"{tuple(stage.shape)}")
            s = stage.to(device=device, dtype=torch.long)
        else:
            s = torch.as_tensor(check_int("stage", stage, minimum=0, maximum=n - 1),
                                dtype=torch.long, device=device)
        s = s.expand(batch) if s.dim() == 0 else s
        return self.t_mlp(timestep_embedding(t, self.config.emb_dim)) + self.stage_emb(s)

    def forward(self, x: torch.Tensor, timestep, stage=0, cond=None) -> torch.Tensor:
        c = self.config
        if x.dim() != 5 or x.shape[1] != c.channels:
            raise ValueError(
                f"x must have shape (B, {c.channels}, T, H, W), got {tuple(x.shape)}"
            )
        h_, w_ = x.shape[-2:]
        if h_ % self.multiple or w_ % self.multiple:
            raise ValueError(
                f"x: H and W must be multiples of {self.multiple}, got {h_}x{w_}"
            )
        if c.cond_channels:
            if cond is None:
                cond = x.new_zeros((x.shape[0], c.cond_channels, *x.shape[2:]))
            elif cond.shape[-2:] != x.shape[-2:]:
                b, cc, t = cond.shape[:3]
                cond = F.interpolate(
                    cond.reshape(b, cc * t, *cond.shape[-2:]), size=(h_, w_), mode="area"
                ).reshape(b, cc, t, h_, w_)
            from vidnoise.conditioning import concat_condition

            h = concat_condition(x, cond, layout="BCTHW")  # [x, cond] on the channel axis
        else:
            h = x
        emb = F.silu(self.embed(timestep, stage, x.shape[0], x.device))
        h = self.stem(h)
        hs = []
        for i, level in enumerate(self.down):
            for j, block in enumerate(level):
                h = block(h, emb)
                if j == len(level) - 1:
                    h = self.down_attn[i](h)  # temporal attention (lower levels only)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        for i, level in enumerate(self.up):
            for block in level:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = F.interpolate(h, scale_factor=(1, 2, 2), mode="nearest")
                h = self.upsample[i](h)
        return self.out(F.silu(self.out_norm(h)))
