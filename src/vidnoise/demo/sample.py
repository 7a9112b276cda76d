"""Sampling for the demo: the pyramid sampler, the flat baseline, ablations, GIF / PNG output.

* :func:`sample_videos` wraps :func:`vidnoise.samplers.sample_pyramid` (pyramidal model:
  ``model(x, timestep, stage) -> start - end``) and :func:`vidnoise.samplers.sample_flow`
  (flat model: ``model(x, σ) -> v = ε - x0``, called with timestep ``1000·σ``).
* Ablations of the pyramid sampler, sampled from the same weights:

  - ``"iid-renoise"``: the stage jump adds i.i.d. noise (γ = 0, no block correlation) with
    the same ``(α, β)``. Nearest upsampling leaves the old noise fully correlated inside each
    2x2 block; only the negative block correlation of the renoising noise cancels that, so
    with i.i.d. renoising the start of each stage has too much blocky, low-frequency noise.
  - ``"x2-bicubic"``: the stage-0 start built as Pyramid-Flow's constant-factor pyramid,
    ``interpolate(n, half, mode) * 2`` per level, with ``mode='bicubic'`` where 2 is wrong
    (variance about 2 per level, 3.1 after two halvings, instead of 1). The exact pyramid
    (:func:`vidnoise.noise.noise_pyramid`) keeps unit variance for any mode.

* :func:`save_gif` / :func:`save_frames_png`: an animated GIF grid and a PNG of frames
  (imageio and pillow, from the ``demo`` extra).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidnoise._checks import check_int
from vidnoise.demo._errors import DemoError

__all__ = [
    "ABLATIONS",
    "sample_videos",
    "pyramid_model_fn",
    "flat_model_fn",
    "wrong_x2_pyramid_noise",
    "to_uint8",
    "save_gif",
    "save_frames_png",
    "load_image",
    "image_condition",
]

ABLATIONS = ("iid-renoise", "x2-bicubic")


def pyramid_model_fn(model, cond=None):
    """``(x, timestep, stage) -> velocity`` for :func:`~vidnoise.samplers.sample_pyramid`."""

    def fn(x, timestep, stage):
        return model(x, timestep, stage, cond=cond)

    return fn


def flat_model_fn(model, stage: int = 0, cond=None):
    """``(x, σ) -> v = ε - x0`` for :func:`~vidnoise.samplers.sample_flow`: the network gets
    timestep ``1000·σ`` (σ = noise fraction) and a fixed stage embedding."""

    from vidnoise.conventions import sigma_to_timestep

    def fn(x, sigma):
        return model(x, sigma_to_timestep(sigma), stage, cond=cond)

    return fn


def _iid_jump(schedule):
    """A stage jump with i.i.d. renoising noise (γ = 0) and the schedule's (α, β)."""
    from vidnoise.noise import randn

    def jump(x, stage, *, generator=None):
        up_shape = (*x.shape[:-2], 2 * x.shape[-2], 2 * x.shape[-1])
        noise = randn(up_shape, generator=generator, device=x.device, dtype=torch.float32)
        return schedule.jump(x, stage, noise=noise)

    return jump


def wrong_x2_pyramid_noise(shape, stages: int, *, mode: str = "bicubic", generator=None):
    """Full-resolution noise whose exact pyramid's coarsest level is the *wrong* one.

    The wrong coarsest level is ``n_{k-1} = interpolate(n_k, (h/2, w/2), mode) * 2``, applied
    ``stages - 1`` times to white noise ``n``. Since :func:`~vidnoise.samplers.sample_pyramid`
    only uses the coarsest level of the noise it is given, and the exact bilinear pyramid of
    ``Up_nearest^(K-1)(c) / 2^(K-1)`` is ``c`` at the coarsest level, returning that tensor
    makes the sampler start from ``c``.
    """
    from vidnoise.noise import randn
    n = randn(shape, generator=generator)
    b, c, t = n.shape[:3]
    x = n.reshape(b, c * t, *n.shape[-2:])
    for _ in range(stages - 1):
        h, w = x.shape[-2:]
        kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        x = F.interpolate(x, size=(h // 2, w // 2), mode=mode, **kw) * 2.0
    coarse = x.reshape(b, c, t, *x.shape[-2:])
    for _ in range(stages - 1):
        coarse = coarse.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    return coarse / 2 ** (stages - 1)


@torch.no_grad()
def sample_videos(
    model,
    cfg,
    n: int,
    *,
    steps: int = 20,
    seed: int = 0,
    flat: bool | None = None,
    ablation: str | None = None,
    grid: str = "exact",
    cond=None,
    batch: int = 16,
    progress: bool = False,
    first: int = 0,
) -> torch.Tensor:
    """``n`` samples (n, C, T, H, W) in [-1, 1] from ``model`` trained with ``cfg``.

    ``steps`` is the number of Euler steps per pyramid stage; the flat sampler takes
    ``stages·steps`` steps on the linear grid ``σ = linspace(1, 0, stages·steps + 1)``, the
    same number of model calls, all at full resolution. ``flat=None`` follows ``cfg.flat``.
    Sample ``i`` depends only on ``(seed, first + i)`` (one generator per sample), so batch
    size does not change the samples and ``first`` continues a set in pieces.
    ``grid="exact"`` uses equal steps down to 0 in each stage (``"reference"``: Pyramid-Flow's
    grid, whose last step only moves 1/1000).

    ``cond`` (image-to-video, a model trained with ``i2v``): the full-resolution condition
    (n, C, T, H, W), e.g. :func:`image_condition` of a first frame; without it an ``i2v``
    model samples unconditionally (the condition is zeros, as with image dropout).
    """
    from vidnoise.demo.trainer import build_schedule, generator_seed
    from vidnoise.samplers import sample_flow, sample_pyramid

    n = check_int("n", n, minimum=0)
    steps = check_int("steps", steps, minimum=1)
    batch = check_int("batch", batch, minimum=1)
    first = check_int("first", first, minimum=0)

    flat = cfg.flat if flat is None else flat
    if cond is not None and not cfg.i2v:
        raise DemoError(
            "this checkpoint was trained without an image condition (train with --i2v)"
        )
    if ablation is not None and ablation not in ABLATIONS:
        raise DemoError(f"ablation must be one of {list(ABLATIONS)}, got {ablation!r}")
    if ablation is not None and flat:
        raise DemoError("ablations apply to the pyramid sampler, not to --flat")
    if not flat and cfg.flat:
        raise DemoError("this checkpoint was trained flat (--flat): sample it with flat=True")
    c = cfg.model.channels
    stages = cfg.stages
    outs = []
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        gens = [torch.Generator().manual_seed(generator_seed(seed, first + i, 100_003))
                for i in range(lo, hi)]
        shape = (hi - lo, c, cfg.frames, cfg.size, cfg.size)
        cnd = None if cond is None else cond[lo:hi]
        if flat:
            from vidnoise.noise import randn
            from vidnoise.schedules import linear

            noise = randn(shape, generator=gens)
            sig = linear(stages * steps)
            st = 0 if cfg.flat else stages - 1
            x = sample_flow(flat_model_fn(model, st, cnd), noise, sig, progress=progress)
        else:
            schedule = build_schedule(cfg)
            kw = {}
            if ablation == "iid-renoise":
                kw["jump"] = _iid_jump(schedule)
            elif ablation == "x2-bicubic":
                kw["noise"] = wrong_x2_pyramid_noise(shape, stages, generator=gens)
            x = sample_pyramid(
                pyramid_model_fn(model, cnd), shape, schedule, (steps,) * stages,
                generator=gens, grid=grid, progress=progress, **kw,
            )
        outs.append(x.clamp(-1, 1))
    return torch.cat(outs)


# ----------------------------------------------------------------------------- images
def to_uint8(videos: torch.Tensor) -> np.ndarray:
    """(B, C, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3) (grey channels repeated)."""
    x = ((videos.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.permute(0, 2, 3, 4, 1).cpu().numpy()
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] != 3:
        x = x[..., :3] if x.shape[-1] > 3 else np.concatenate(
            [x, np.zeros((*x.shape[:-1], 3 - x.shape[-1]), np.uint8)], axis=-1
        )
    return x


def _grid(frames: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """(B, H, W, 3) -> one (rows·(H+pad)+pad, cols·(W+pad)+pad, 3) image, white padding."""
    b, h, w, _ = frames.shape
    rows = math.ceil(b / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(b):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = frames[i]
    return out


def _upscale(img: np.ndarray, scale: int) -> np.ndarray:
    return img if scale == 1 else img.repeat(scale, axis=0).repeat(scale, axis=1)


def save_gif(videos: torch.Tensor, path, *, cols: int | None = None, scale: int = 2,
             fps: float = 6.0) -> Path:
    """An animated GIF of a grid of videos (B, C, T, H, W) in [-1, 1]; loops forever."""
    from PIL import Image

    v = to_uint8(videos)
    b, t = v.shape[:2]
    cols = cols or math.ceil(math.sqrt(b))
    frames = [Image.fromarray(_upscale(_grid(v[:, i], cols), scale)) for i in range(t)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps),
                   loop=0, optimize=False)
    return path


def save_frames_png(videos: torch.Tensor, path, *, scale: int = 2, labels=None) -> Path:
    """A PNG with one row per video and its frames left to right (optional row labels)."""
    from PIL import Image, ImageDraw

    v = to_uint8(videos)
    b, t, h, w, _ = v.shape
    rows = [np.concatenate(list(v[i]), axis=1) for i in range(b)]  # (H, T·W, 3)
    img = _grid(np.stack(rows), 1)
    img = _upscale(img, scale)
    if labels:
        margin = 90
        canvas = Image.new("RGB", (img.shape[1] + margin, img.shape[0]), "white")
        canvas.paste(Image.fromarray(img), (margin, 0))
        draw = ImageDraw.Draw(canvas)
        for i, text in enumerate(labels[:b]):
            draw.text((4, scale * (2 + i * (h + 2)) + 4), str(text), fill=(0, 0, 0))
        out = canvas
    else:
        out = Image.fromarray(img)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


def image_condition(image: torch.Tensor, n: int, frames: int) -> torch.Tensor:
    """Inference condition (n, C, frames, H, W) of one image (C, H, W) in [-1, 1]:
    :func:`vidnoise.conditioning.condition` (the clean image, zero frames after it)."""
    from vidnoise.conditioning import condition

    img = image[None, :, None].expand(n, -1, -1, -1, -1).contiguous()
    return condition(img, frames)


def load_image(path, size: int, channels: int = 3) -> torch.Tensor:
    """An image file as a (channels, size, size) tensor in [-1, 1] (centre crop, resize)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DemoError(f"image {str(p)!r} does not exist")
    try:
        img = Image.open(p).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DemoError(f"image {str(p)!r} cannot be read: {exc}") from None
    arr = np.asarray(img)
    s = min(arr.shape[:2])
    top, left = (arr.shape[0] - s) // 2, (arr.shape[1] - s) // 2
    x = torch.from_numpy(arr[top : top + s, left : left + s].copy()).permute(2, 0, 1).float()
    x = x[None] / 127.5 - 1
    if s != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=s > size)
    x = x[0].clamp(-1, 1)
    if channels == 1:
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    elif channels != 3:
        raise DemoError(f"--image needs a model with 1 or 3 channels, got {channels}")
    return x
