"""Sample-quality figures for the demo: set-to-set distances between two sets of videos.

All take videos (N, C, T, H, W) in [-1, 1].

* :func:`frechet_distance` on the features of :class:`RandomVideoEncoder`, a fixed, seeded,
  *untrained* 3-D conv network (an FVD-like figure without a pretrained network or a
  download): ``FD = |μ_a - μ_b|² + Tr(Σ_a + Σ_b - 2 (Σ_a^½ Σ_b Σ_a^½)^½)`` between Gaussians
  fitted to the two feature sets. Random conv features respond to local colour, edges,
  texture and short-range motion (kernels span 3 frames), so the figure separates noise,
  blur and wrong colours from clean moving shapes. It does not know object identity or
  semantics, it is biased upwards for small sets (compare figures at the same set size, with
  the real-vs-real figure as the floor), and it is only comparable between runs that use the
  same encoder seed, resolution and frame count.
* :func:`temporal_stats`: mean absolute frame difference ``|x_{t+1} - x_t|`` (motion) and
  mean absolute second difference ``|x_{t+1} - 2x_t + x_{t-1}|`` (flicker: frame-to-frame
  changes that are not smooth motion), both in units of the [0, 1] intensity range;
  :func:`flicker_distance` is the absolute difference of the flicker of two sets.
* :func:`colour_histogram_distance`: total-variation distance ``½ Σ |p - q|`` between the
  joint colour histograms (8 bins per channel) of all pixels of the two sets, in [0, 1]. It
  sees the colour palette only, nothing about shape or motion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidnoise._checks import check_int

__all__ = [
    "RandomVideoEncoder",
    "frechet_distance",
    "features",
    "temporal_stats",
    "flicker_distance",
    "colour_histogram_distance",
    "quality_figures",
]


class RandomVideoEncoder(nn.Module):
    """A fixed random 3-D conv encoder: features for a Fréchet distance between video sets.

    Three 3x3x3 convolutions (16, 32, 64 channels; spatial stride 2 each, temporal stride 1)
    with ReLU, weights drawn from N(0, 2/fan_in) by a generator seeded with ``seed`` (so the
    features are the same in every run and process); the features are the spatio-temporal
    means and standard deviations of each layer's activations (2·(16+32+64) = 224 values).
    """

    def __init__(self, channels: int = 3, seed: int = 0, widths=(16, 32, 64)):
        super().__init__()
        check_int("channels", channels, minimum=1)
        check_int("seed", seed, minimum=0, maximum=2**64 - 1)
        if not widths or not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of ints >= 1, got {widths!r}")
        g = torch.Generator().manual_seed(seed)
        layers = []
        cin = channels
        for w in widths:
            conv = nn.Conv3d(cin, w, 3, stride=(1, 2, 2), padding=1)
            with torch.no_grad():
                conv.weight.copy_(
                    torch.randn(conv.weight.shape, generator=g) * (2.0 / (cin * 27)) ** 0.5
                )
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
            layers.append(conv)
            cin = w
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        h = x.float()
        for conv in self.layers:
            h = F.relu(conv(h))
            flat = h.flatten(2)
            feats += [flat.mean(-1), flat.std(-1)]
        return torch.cat(feats, dim=1)


def features(videos: torch.Tensor, encoder: RandomVideoEncoder | None = None,
             batch: int = 64) -> torch.Tensor:
    """Encoder features (N, D) of ``videos`` (N, C, T, H, W) (float64)."""
    check_int("batch", batch, minimum=1)
    if not isinstance(videos, torch.Tensor) or videos.dim() != 5:
        raise ValueError(f"videos must be a (N, C, T, H, W) tensor, got "
                         f"{getattr(videos, 'shape', type(videos).__name__)}")
    enc = encoder or RandomVideoEncoder(videos.shape[1])
    cin = enc.layers[0].in_channels
    if videos.shape[1] != cin:
        raise ValueError(f"videos have {videos.shape[1]} channels, the encoder takes {cin}")
    outs = [enc(videos[i : i + batch]) for i in range(0, videos.shape[0], batch)]
    return torch.cat(outs).double()


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(fa: torch.Tensor, fb: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets (N_a, D) and (N_b, D).

    ``|μ_a - μ_b|² + Tr Σ_a + Tr Σ_b - 2 Tr (Σ_a^½ Σ_b Σ_a^½)^½`` in float64, with
    symmetric eigen-decompositions (no scipy).
    """
    fa, fb = fa.double(), fb.double()
    if fa.dim() != 2 or fb.dim() != 2 or fa.shape[1] != fb.shape[1]:
        raise ValueError(f"fa and fb must be (N, D) feature sets with the same D, got "
                         f"{tuple(fa.shape)} and {tuple(fb.shape)}")
    if fa.shape[0] < 2 or fb.shape[0] < 2:
        raise ValueError(f"frechet_distance needs at least 2 samples in each set, got "
                         f"{fa.shape[0]} and {fb.shape[0]}")
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    ca, cb = torch.cov(fa.T), torch.cov(fb.T)
    sa = _sqrtm_psd(ca)
    cross = _sqrtm_psd(sa @ cb @ sa)
    fd = (mu_a - mu_b).square().sum() + ca.trace() + cb.trace() - 2 * cross.trace()
    return float(fd.clamp_min(0))


def temporal_stats(videos: torch.Tensor) -> dict:
    """``motion`` = mean |x_{t+1} - x_t| and ``flicker`` = mean |x_{t+1} - 2x_t + x_{t-1}|
    over a set, in units of the [0, 1] intensity range (values in [-1, 1] are halved)."""
    x = videos.float() / 2
    d1 = x[:, :, 1:] - x[:, :, :-1]
    d2 = d1[:, :, 1:] - d1[:, :, :-1]
    return {
        "motion": float(d1.abs().mean()) if d1.numel() else 0.0,
        "flicker": float(d2.abs().mean()) if d2.numel() else 0.0,
    }


def flicker_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """|flicker(a) - flicker(b)| (see :func:`temporal_stats`)."""
    return abs(temporal_stats(a)["flicker"] - temporal_stats(b)["flicker"])


def _histogram(videos: torch.Tensor, bins: int) -> torch.Tensor:
    x = ((videos.float().clamp(-1, 1) + 1) / 2 * bins).long().clamp_(0, bins - 1)
    c = x.shape[1]
    if c <= 3:
        idx = torch.zeros_like(x[:, 0])
        for i in range(c):
            idx = idx * bins + x[:, i]
        h = torch.bincount(idx.flatten(), minlength=bins**c).double()
    else:  # per-channel histograms side by side
        h = torch.cat([torch.bincount(x[:, i].flatten(), minlength=bins) for i in range(c)])
        h = h.double()
    return h / h.sum()


def colour_histogram_distance(a: torch.Tensor, b: torch.Tensor, bins: int = 8) -> float:
    """Total-variation distance ``½ Σ |p - q|`` of the joint colour histograms, in [0, 1].

    ``bins`` (>= 1) per channel; ``a`` and ``b`` are (N, C, T, H, W) with the same C."""
    check_int("bins", bins, minimum=1)
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, torch.Tensor) or v.dim() != 5 or v.shape[0] < 1:
            raise ValueError(f"{name} must be a (N >= 1, C, T, H, W) tensor, got "
                             f"{getattr(v, 'shape', type(v).__name__)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same channels, got {a.shape[1]} and "
                         f"{b.shape[1]}")
    return float(0.5 * (_histogram(a, bins) - _histogram(b, bins)).abs().sum())


def quality_figures(videos: torch.Tensor, reference: torch.Tensor,
                    encoder: RandomVideoEncoder | None = None,
                    ref_features: torch.Tensor | None = None) -> dict:
    """All figures of ``videos`` against ``reference``: ``fd``, ``flicker``, ``flicker_gap``,
    ``motion``, ``colour_tv``, ``n``."""
    enc = encoder or RandomVideoEncoder(videos.shape[1])
    fr = ref_features if ref_features is not None else features(reference, enc)
    fv = features(videos, enc)
    ts, tr = temporal_stats(videos), temporal_stats(reference)
    return {
        "fd": frechet_distance(fv, fr),
        "flicker": ts["flicker"],
        "flicker_gap": abs(ts["flicker"] - tr["flicker"]),
        "motion": ts["motion"],
        "colour_tv": colour_histogram_distance(videos, reference),
        "n": int(videos.shape[0]),
    }
