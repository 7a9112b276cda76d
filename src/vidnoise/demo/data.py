"""Video data for the demo: procedural moving shapes (no download) and a folder of clips.

Every dataset returns float32 clips of shape ``(C, T, H, W)`` with values in ``[-1, 1]``;
the demo treats these pixels as the "latents" of the flow model (there is no VAE).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vidnoise._checks import check_int
from vidnoise.demo._errors import DemoError

__all__ = ["MovingShapes", "VideoFolder", "VIDEO_SUFFIXES", "stack"]

VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".avi", ".mov", ".mkv")

# Saturated shape colours (RGB in [0, 1]); backgrounds are drawn darker and duller.
_PALETTE = np.array(
    [
        [0.95, 0.20, 0.15],  # red
        [0.15, 0.75, 0.25],  # green
        [0.20, 0.40, 0.95],  # blue
        [0.98, 0.85, 0.15],  # yellow
        [0.90, 0.30, 0.85],  # magenta
        [0.15, 0.85, 0.90],  # cyan
        [0.98, 0.55, 0.10],  # orange
        [0.97, 0.97, 0.97],  # white
    ]
)
SHAPES = ("circle", "square", "triangle")


class MovingShapes(torch.utils.data.Dataset):
    """Procedural videos of coloured shapes moving and bouncing on a textured background.

    Clip ``i`` depends only on ``(seed, i)`` (a NumPy ``default_rng([seed, i])``), so it is
    the same in every process, order and batch. Each clip has 1 to ``max_shapes`` shapes
    (circle, square, triangle) of a saturated colour, a radius drawn from ``radius`` and
    anti-aliased edges, moving at a
    constant velocity of 0.8-2.4 pixels per frame (scaled with ``size / 32``) and bouncing off
    the borders, over a static background: a smooth two-colour gradient plus a faint
    sinusoidal texture. Later shapes are drawn over earlier ones.

    Args:
        size: height = width of the frames (>= 8).
        frames: frames per clip (>= 1).
        channels: 3 gives RGB; 1 gives luminance; any other count draws colours in that many
            channels.
        max_shapes: the most shapes in a clip (>= 1).
        seed: dataset seed; different seeds give disjoint-looking datasets (use one for
            training and another for held-out "real" clips in metrics).
        length: the dataset's nominal length (clips exist for every index >= 0).
        radius: range of the shapes' radii in pixels at size 32 (scaled with ``size / 32``).

    Returns clips as float32 tensors (C, T, H, W) in [-1, 1].
    """

    def __init__(
        self,
        size: int = 32,
        frames: int = 8,
        channels: int = 3,
        max_shapes: int = 3,
        seed: int = 0,
        length: int = 1_000_000,
        radius: tuple[float, float] = (4.5, 7.5),
    ):
        self.size = check_int("size", size, minimum=8)
        self.frames = check_int("frames", frames, minimum=1)
        self.channels = check_int("channels", channels, minimum=1)
        self.max_shapes = check_int("max_shapes", max_shapes, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.length = check_int("length", length, minimum=1)
        if len(radius) != 2 or not 0 < radius[0] <= radius[1]:
            raise ValueError(f"radius must be (min, max) with 0 < min <= max, got {radius!r}")
        if radius[1] * self.size / 32.0 >= self.size / 2:
            raise ValueError(
                f"radius {tuple(radius)} (pixels at size 32, scaled by size/32) must have "
                f"max < 16 so that a shape fits in the frame, got max {radius[1]}"
            )
        self.radius = (float(radius[0]), float(radius[1]))
        ys, xs = np.mgrid[0:self.size, 0:self.size].astype(np.float64) + 0.5
        self._ys, self._xs = ys, xs

    def __len__(self) -> int:
        return self.length

    def _colour(self, rng, rgb: np.ndarray) -> np.ndarray:
        if self.channels == 3:
            return rgb
        if self.channels == 1:
            return np.array([0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]])
        return rng.uniform(0.0, 1.0, size=self.channels)

    def _mask(self, kind: str, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
        dy, dx = self._ys - cy, self._xs - cx
        if kind == "circle":
            sd = np.sqrt(dy * dy + dx * dx) - r  # signed distance, negative inside
        elif kind == "square":
            c, s = math.cos(angle), math.sin(angle)
            u, v = c * dx + s * dy, -s * dx + c * dy
            sd = np.maximum(np.abs(u), np.abs(v)) - 0.85 * r
        else:  # equilateral triangle, circumradius r, pointing by angle
            sd = np.full_like(dx, -np.inf)
            for k in range(3):
                a = angle + 2 * math.pi * k / 3 + math.pi
                sd = np.maximum(sd, math.cos(a) * dx + math.sin(a) * dy - 0.5 * r)
        return np.clip(0.5 - sd, 0.0, 1.0)  # one-pixel anti-aliased edge

    def __getitem__(self, index: int) -> torch.Tensor:
        index = check_int("index", index, minimum=0)
        rng = np.random.default_rng([self.seed, index])
        n, size, scale = self.size, self.size, self.size / 32.0
        # background: two dull colours along a random direction + a faint texture
        c0 = rng.uniform(0.05, 0.45, size=3)
        c1 = rng.uniform(0.05, 0.45, size=3)
        theta = rng.uniform(0, 2 * math.pi)
        ramp = (math.cos(theta) * self._xs + math.sin(theta) * self._ys) / n
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
        freq = rng.uniform(2.0, 5.0) * 2 * math.pi / n
        phi = rng.uniform(0, 2 * math.pi)
        tex = 0.06 * np.sin(freq * self._xs + phi) * np.sin(freq * self._ys + 0.7 * phi)
        bg_rgb = c0[:, None, None] * (1 - ramp) + c1[:, None, None] * ramp + tex
        if self.channels == 3:
            bg = bg_rgb
        elif self.channels == 1:
            bg = (0.299 * bg_rgb[0] + 0.587 * bg_rgb[1] + 0.114 * bg_rgb[2])[None]
        else:
            lo = rng.uniform(0.05, 0.45, size=(self.channels, 1, 1))
            hi = rng.uniform(0.05, 0.45, size=(self.channels, 1, 1))
            bg = lo * (1 - ramp) + hi * ramp + tex
        video = np.repeat(bg[:, None], self.frames, axis=1).copy()  # (C, T, H, W)

        count = int(rng.integers(1, self.max_shapes + 1))
        colours = rng.permutation(len(_PALETTE))[:count]
        for k in range(count):
            kind = SHAPES[int(rng.integers(0, len(SHAPES)))]
            r = rng.uniform(*self.radius) * scale
            pos = rng.uniform(r, size - r, size=2)
            speed = rng.uniform(0.8, 2.4) * scale
            direction = rng.uniform(0, 2 * math.pi)
            vel = speed * np.array([math.sin(direction), math.cos(direction)])
            angle = rng.uniform(0, 2 * math.pi)
            spin = rng.uniform(-0.15, 0.15)
            colour = self._colour(rng, _PALETTE[colours[k]])[:, None, None]
            for t in range(self.frames):
                m = self._mask(kind, pos[0], pos[1], r, angle + spin * t)
                video[:, t] = video[:, t] * (1 - m) + colour * m
                pos = pos + vel
                for d in range(2):  # bounce off the borders
                    if pos[d] < r:
                        pos[d], vel[d] = 2 * r - pos[d], -vel[d]
                    elif pos[d] > size - r:
                        pos[d], vel[d] = 2 * (size - r) - pos[d], -vel[d]
        video = np.clip(video, 0.0, 1.0) * 2.0 - 1.0
        return torch.from_numpy(video.astype(np.float32))

    def batch(self, indices) -> torch.Tensor:
        """Stack the clips of ``indices`` into a (B, C, T, H, W) tensor."""
        return stack([self[int(i)] for i in indices])


def stack(clips) -> torch.Tensor:
    """Stack a list of (C, T, H, W) clips into (B, C, T, H, W)."""
    return torch.stack(list(clips), dim=0)


def _read_frames(path: Path) -> np.ndarray:
    """Frames of a video file as uint8 (T, H, W, C) (imageio; .mp4 etc. through PyAV, both
    from the ``demo`` extra)."""
    try:
        import imageio.v3 as iio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DemoError(
            "reading a video folder needs imageio: pip install 'vidnoise[demo]'"
        ) from exc
    if path.stat().st_size == 0:
        raise _Skip("empty file")
    try:
        arr = np.asarray(iio.imread(path, index=None))
    except ImportError as exc:
        raise _Skip(f"no video reader for {path.suffix} ({exc}; the demo extra installs PyAV: "
                    "pip install 'vidnoise[demo]')") from None
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        if path.suffix.lower() != ".gif" and "plugin" in text.lower():
            raise _Skip(f"no video reader for {path.suffix} (the demo extra installs PyAV: "
                        "pip install 'vidnoise[demo]')") from None
        raise _Skip(f"unreadable ({type(exc).__name__}: {text})") from None
    if arr.ndim == 2:  # one grey frame
        arr = arr[None, :, :, None]
    elif arr.ndim == 3:  # (T, H, W) grey frames, or one (H, W, C) frame
        arr = arr[None] if arr.shape[-1] in (3, 4) and path.suffix.lower() != ".gif" else arr[
            ..., None
        ]
    if arr.ndim != 4 or 0 in arr.shape:
        raise _Skip(f"unexpected frame array of shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr[..., :3]


class _Skip(Exception):
    """A file of a data folder that is not used (the message says why)."""


def _crop_resize(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, size, size) in [-1, 1]: centre crop, resize."""
    t, h, w, _ = frames.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + s, left : left + s]))
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (T, 3, s, s)
    if s != size:
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=s > size
        )
    return x.clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


class VideoFolder(torch.utils.data.Dataset):
    """Clips from a folder of video files (.gif, .mp4, ...), centre-cropped and resized.

    Every readable file with at least ``frames`` frames gives ``floor(T / frames)``
    non-overlapping clips of ``frames`` consecutive frames; frames are centre-cropped to a
    square, resized to ``size`` x ``size`` (bilinear, antialiased when shrinking) and mapped to
    ``[-1, 1]`` as (3, T, H, W) float32. Files are read once, at construction (imageio; .mp4
    and the other video formats through PyAV, both in the ``demo`` extra).

    Raises :class:`~vidnoise.demo.DemoError` when the folder does not exist or holds no
    readable video with enough frames; ``skipped`` lists (file name, reason) for each file
    that was not used, and :meth:`summary` says it in one line.
    """

    def __init__(self, path, size: int = 32, frames: int = 8):
        self.path = Path(path)
        self.size = check_int("size", size, minimum=1)
        self.frames = check_int("frames", frames, minimum=1)
        self.channels = 3
        if not self.path.is_dir():
            raise DemoError(f"data folder {str(self.path)!r} does not exist or is not a folder")
        files = sorted(
            p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
        )
        self.files = len(files)
        self.skipped: list[tuple[str, str]] = []
        clips = []
        for f in files:
            try:
                arr = _read_frames(f)
            except (_Skip, OSError) as exc:  # unreadable, empty or corrupt: skip, say why
                self.skipped.append((f.name, str(exc)))
                continue
            n = arr.shape[0] // self.frames
            if n == 0:
                self.skipped.append((f.name, f"{arr.shape[0]} frame(s), fewer than "
                                             f"{self.frames}"))
                continue
            video = _crop_resize(arr[: n * self.frames], self.size)
            clips.extend(video[:, i * self.frames : (i + 1) * self.frames] for i in range(n))
        if not clips:
            if not files:
                raise DemoError(f"data folder {str(self.path)!r} holds no readable video: no "
                                f"video file ({'/'.join(VIDEO_SUFFIXES)})")
            raise DemoError(f"data folder {str(self.path)!r} has no readable video: "
                            f"{self._skipped_text()}")
        self.clips = torch.stack(clips).contiguous()

    def _skipped_text(self, most: int = 5) -> str:
        parts = [f"{name} ({why})" for name, why in self.skipped[:most]]
        more = len(self.skipped) - most
        return f"skipped {len(self.skipped)}: " + "; ".join(parts) + (
            f"; and {more} more" if more > 0 else "")

    def summary(self) -> str:
        """``"N clips from M files, skipped K: name (reason); ..."`` (one line)."""
        used = self.files - len(self.skipped)
        text = f"data: {len(self)} clips from {used} file(s) in {str(self.path)!r}"
        return text + (f", {self._skipped_text()}" if self.skipped else ", skipped 0")

    def __len__(self) -> int:
        return self.clips.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.clips[index]

    def batch(self, indices) -> torch.Tensor:
        """Stack the clips of ``indices`` into a (B, 3, T, H, W) tensor."""
        return self.clips[torch.as_tensor(list(indices), dtype=torch.long)]
