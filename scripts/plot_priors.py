"""Pictures for docs/priors.md: frame correlations of the priors, the FreeInit filter and the
variance of its two mixes, a warped-noise clip. Writes docs/img/priors_*.png.

    python scripts/plot_priors.py            (needs the `plot` extra: matplotlib)
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from vidnoise.priors import (  # noqa: E402
    freeinit_filter,
    freeinit_noise_variance,
    mixed_noise,
    progressive_noise,
    warp_noise,
)

OUT = Path(__file__).resolve().parents[1] / "docs" / "img"


def lag_corr(x: torch.Tensor, lag: int) -> float:
    a = x[:, :, : x.shape[2] - lag].double()
    b = x[:, :, lag:].double()
    return float((a * b).mean() / (a.square().mean() * b.square().mean()).sqrt())


def correlation_plot() -> None:
    g = torch.Generator().manual_seed(0)
    shape = (8, 4, 16, 32, 32)
    lags = list(range(16))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for alpha, color in ((0.5, "C0"), (1.0, "C1"), (2.0, "C2")):
        mix = mixed_noise(shape, alpha, generator=g)
        pro = progressive_noise(shape, alpha, generator=g)
        r = alpha**2 / (1 + alpha**2)
        rho = alpha / math.sqrt(1 + alpha**2)
        axes[0].plot(lags, [1.0] + [r] * 15, "-", color=color, lw=1, label=f"α={alpha} exact")
        axes[0].plot(lags, [lag_corr(mix, k) for k in lags], "o", color=color, ms=3)
        axes[1].plot(lags, [rho**k for k in lags], "-", color=color, lw=1, label=f"α={alpha}")
        axes[1].plot(lags, [lag_corr(pro, k) for k in lags], "o", color=color, ms=3)
    axes[0].set_title("mixed_noise: corr(ε_t, ε_t+k)")
    axes[1].set_title("progressive_noise: corr(ε_t, ε_t+k)")
    for ax in axes:
        ax.set_xlabel("frame lag k")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("correlation (lines exact, dots measured)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "priors_correlation.png", dpi=110)
    plt.close(fig)


def freeinit_plot() -> None:
    shape = (1, 1, 21, 60, 104)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    w = shape[-1]
    f = (torch.arange(w) - w // 2) * (2.0 / w)
    for kind in ("butterworth", "gaussian", "ideal"):
        filt = freeinit_filter(shape, kind=kind)[0, 0, 10, 30]
        axes[0].plot(f, filt, label=kind)
    axes[0].set_title("FreeInit low-pass L along W (T, H at DC), d_s = 0.25")
    axes[0].set_xlabel("normalised frequency f_w")
    axes[0].legend(fontsize=8)
    filt = freeinit_filter(shape)[0, 0, 10, 30]
    axes[1].plot(f, freeinit_noise_variance(filt, variance_preserving=False), label="L, 1-L")
    axes[1].plot(f, freeinit_noise_variance(filt), label="L, √(1-L²) (default)")
    axes[1].set_ylim(0.4, 1.05)
    axes[1].set_title("noise variance per frequency after the mix")
    axes[1].set_xlabel("normalised frequency f_w")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "priors_freeinit.png", dpi=110)
    plt.close(fig)


def warp_plot() -> None:
    g = torch.Generator().manual_seed(1)
    h, w = 128, 192
    yy, xx = torch.meshgrid(torch.arange(h) - h / 2, torch.arange(w) - w / 2, indexing="ij")
    a = 0.03
    flow = torch.stack([xx * (math.cos(a) - 1) - yy * math.sin(a),
                        xx * math.sin(a) + yy * (math.cos(a) - 1)])[None]
    frames = [torch.randn(1, 1, h, w, generator=g)]
    for _ in range(5):
        frames.append(warp_noise(frames[-1], flow, generator=g))
    fig, axes = plt.subplots(2, 6, figsize=(13, 3.6))
    for t, fr in enumerate(frames):
        axes[0, t].imshow(fr[0, 0], cmap="gray", vmin=-3, vmax=3)
        axes[0, t].set_title(f"frame {t} (std {float(fr.std()):.2f})", fontsize=8)
        # 8x8 box sums (scaled to unit variance) show the coarse structure turning
        coarse = torch.nn.functional.avg_pool2d(fr, 8) * 8
        axes[1, t].imshow(coarse[0, 0], cmap="gray", vmin=-2.5, vmax=2.5)
        for ax in axes[:, t]:
            ax.axis("off")
    fig.suptitle("warp_noise along a rotation by 0.03 rad per frame (bottom: 8x8 box sums)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT / "priors_warp.png", dpi=110)
    plt.close(fig)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    correlation_plot()
    freeinit_plot()
    warp_plot()
    print(f"wrote {OUT}/priors_correlation.png, priors_freeinit.png, priors_warp.png")


if __name__ == "__main__":
    main()
