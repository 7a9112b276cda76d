"""Video noise priors: PYoCo's mixed and progressive noise, FreeNoise's rescheduling, FreeInit's
frequency re-initialisation and noise warped along optical flow.

Every random function takes ``generator=``: ``None``, one ``torch.Generator``, one per item of
dim 0, or a :class:`vidnoise.noise.NoiseKey` (keyed noise: the result is then a pure function
of the key and the global coordinates, whatever the batch size, frame count or process).
Work is done in float32 (float64 for float64 input) and returned in the requested dtype.
The math is in ``docs/math.md §11``; examples in ``docs/priors.md``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidnoise._checks import (
    check_bool,
    check_choice,
    check_float,
    check_floating_dtype,
    check_int,
    check_shape,
    check_tensor,
    work_dtype,
)
from vidnoise.noise import NoiseKey, as_generators, keyed_randn, normal_like_source

__all__ = [
    "mixed_noise",
    "progressive_noise",
    "freenoise",
    "freeinit_filter",
    "freeinit",
    "freeinit_noise_variance",
    "warp_noise",
]

FILTER_KINDS = ("butterworth", "gaussian", "ideal")


# ----------------------------------------------------------------------------- helpers
def _check_source(generator, batch: int):
    if isinstance(generator, NoiseKey):
        return generator
    return as_generators(generator, batch)


def _frame_dim(frame_dim, ndim: int, name: str = "shape") -> int:
    frame_dim = check_int("frame_dim", frame_dim, minimum=0)
    if frame_dim >= ndim:
        raise ValueError(
            f"frame_dim={frame_dim} needs a {name} with more than {frame_dim} dims, got {ndim} "
            f"dims (frame_dim is 2 for (B, C, T, H, W), 1 for (B, T, C, H, W))"
        )
    return frame_dim


def _key_origin(key: NoiseKey, ndim: int) -> list[int]:
    if key.origin is None:
        return [0] * ndim
    if len(key.origin) != ndim:
        raise ValueError(
            f"generator=NoiseKey origin {key.origin} must have one entry per dim of the noise "
            f"({ndim})"
        )
    return list(key.origin)


def _prior_args(shape, alpha, frame_dim, dtype, generator):
    """The checked arguments shared by the PYoCo priors: (shape, frame dim, α, dtype, working
    dtype, noise source)."""
    shape = check_shape("shape", shape)
    fd = _frame_dim(frame_dim, len(shape))
    a = check_float("alpha", alpha, low=0.0)
    dtype = check_floating_dtype("dtype", dtype)
    return shape, fd, a, dtype, work_dtype(dtype), _check_source(generator, shape[0])


# ----------------------------------------------------------------------------- PYoCo
def mixed_noise(
    shape, alpha: float, *, frame_dim: int = 2, generator=None, device=None, dtype=None
) -> torch.Tensor:
    """PYoCo's mixed noise prior (Ge et al. 2023, arXiv 2305.10474, §3.2):

        ε_t = (α·ε_shared + ε_ind,t) / √(1 + α²)

    with one ``ε_shared`` per sample (constant along ``frame_dim``) and ``ε_ind,t`` independent
    per frame, all N(0, 1). Every element is exactly N(0, 1); two frames of one sample have
    correlation ``α²/(1 + α²)``; samples and positions are independent. ``α = 0`` is white.

    With a generator, ``ε_shared`` is drawn first, then ``ε_ind``. With a
    :class:`~vidnoise.noise.NoiseKey`, ``ε_ind`` is the key's own keyed noise (so ``α = 0``
    gives exactly ``keyed_randn``) and ``ε_shared`` comes from ``key.derive("mixed_shared")``
    at frame coordinate 0, so shards along the frame axis share it.
    """
    shape, fd, a, dtype, wd, src = _prior_args(shape, alpha, frame_dim, dtype, generator)
    shared_shape = list(shape)
    shared_shape[fd] = 1
    if isinstance(src, NoiseKey):
        origin = _key_origin(src, len(shape))
        shared_origin = list(origin)
        shared_origin[fd] = 0
        shared = src.derive("mixed_shared").at(shared_origin).randn(
            shared_shape, dtype=wd, device=device
        )
        ind = src.randn(shape, dtype=wd, device=device)
    else:
        shared = normal_like_source(shared_shape, src, device=device, dtype=wd)
        ind = normal_like_source(shape, src, device=device, dtype=wd)
    out = ind.add_(shared, alpha=a).mul_(1.0 / math.sqrt(1.0 + a * a))
    return out if out.dtype == dtype else out.to(dtype)


def progressive_noise(
    shape, alpha: float, *, frame_dim: int = 2, generator=None, device=None, dtype=None
) -> torch.Tensor:
    """PYoCo's progressive noise prior (arXiv 2305.10474, §3.2), an AR(1) chain along frames:

        ε_0 = z_0,        ε_t = (α·ε_{t-1} + z_t) / √(1 + α²)

    with ``z_t`` iid N(0, 1). The first frame is plain unit noise, so by induction every frame
    is exactly N(0, 1) (``α²/(1+α²) + 1/(1+α²) = 1``) and ``Corr(ε_t, ε_u) = ρ^|t-u|`` with
    ``ρ = α/√(1 + α²)``. ``α = 0`` is white.

    With a :class:`~vidnoise.noise.NoiseKey` whose frame origin is ``t0 > 0``, ``z`` is drawn
    from frame 0 and the chain run to ``t0 + T`` (the chain needs its past), so a shard along
    frames equals the slice of the whole clip.
    """
    shape, fd, a, dtype, wd, src = _prior_args(shape, alpha, frame_dim, dtype, generator)
    t0 = 0
    if isinstance(src, NoiseKey):
        origin = _key_origin(src, len(shape))
        t0 = origin[fd]
        origin[fd] = 0
        full = list(shape)
        full[fd] = t0 + shape[fd]
        z = src.at(origin).randn(full, dtype=wd, device=device)
    else:
        z = normal_like_source(shape, src, device=device, dtype=wd)
    c = a / math.sqrt(1.0 + a * a)
    s = 1.0 / math.sqrt(1.0 + a * a)
    for t in range(1, z.shape[fd]):  # in place: frame t-1 already holds ε_{t-1}
        z.select(fd, t).mul_(s).add_(z.select(fd, t - 1), alpha=c)
    out = z.narrow(fd, t0, shape[fd]) if t0 else z
    return out.to(dtype) if out.dtype != dtype or t0 else out


# ----------------------------------------------------------------------------- FreeNoise
def _freenoise_perms(frames, window, stride, src, batch):
    """Yield (start, length, perm) per block in diffusers' order (perm: int64 CPU tensor or a
    list of them, one per sample)."""
    for i in range(window, frames, stride):
        ws = i - window
        length = min(frames, ws + stride) - ws
        take = min(frames, i + length) - i
        if isinstance(src, NoiseKey):
            v = keyed_randn((1, length), seed=src.derive("freenoise").seed, origin=(i, 0))
            perm = torch.argsort(v[0], stable=True)
        elif isinstance(src, list):
            perm = [torch.randperm(length, generator=g, device=g.device).cpu() for g in src]
        else:
            perm = torch.randperm(length, generator=src)
        yield i, ws, take, perm


def freenoise(noise: torch.Tensor, window: int, stride: int, *, frame_dim: int = 2,
              generator=None) -> torch.Tensor:
    """FreeNoise's noise rescheduling (Qiu et al. 2023, arXiv 2310.15169), as diffusers'
    ``AnimateDiffFreeNoiseMixin._prepare_latents_free_noise`` ("shuffle_context") does it:

    the first ``window`` frames are kept; for ``i = window, window + stride, ...`` the block of
    ``L = min(T, i - window + stride) - (i - window)`` frames starting at ``i - window`` (as it
    stands after the earlier blocks) is permuted with ``torch.randperm(L, generator)`` and
    written to frames ``i .. i + L`` (a last partial block takes the permutation's first
    frames). Any frame count works; with ``stride <= window`` every frame is a copy of one of
    the first ``window`` (a longer stride also copies frames from beyond the window).

    The rewrites are composed on a small index vector and applied with one gather, so the
    result equals diffusers' sequential in-place loop element for element, with the same
    generator draws. A sequence of generators gives each sample its own permutations
    (diffusers cannot); a :class:`~vidnoise.noise.NoiseKey` gives permutations that depend
    only on the key and the block's first frame. Returns a new tensor.
    """
    check_tensor("noise", noise)
    fd = _frame_dim(frame_dim, noise.dim(), "noise")
    window = check_int("window", window, minimum=1)
    stride = check_int("stride", stride, minimum=1)
    frames = noise.shape[fd]
    batch = noise.shape[0] if noise.dim() else 0
    src = _check_source(generator, batch)
    if isinstance(src, list) and fd == 0:
        raise ValueError("one generator per sample needs frame_dim >= 1 (dim 0 is the batch)")
    per_sample = isinstance(src, list)
    idx = torch.arange(frames).repeat(batch if per_sample else 1, 1)
    for i, ws, take, perm in _freenoise_perms(frames, window, stride, src, batch):
        if per_sample:
            for b, p in enumerate(perm):
                idx[b, i : i + take] = idx[b, ws + p[:take]].clone()
        else:
            idx[0, i : i + take] = idx[0, ws + perm[:take]].clone()
    idx = idx.to(noise.device)
    if not per_sample:
        return noise.index_select(fd, idx[0])
    view = [batch] + [1] * (noise.dim() - 1)
    view[fd] = frames
    return torch.gather(noise, fd, idx.view(view).expand(noise.shape))


# ----------------------------------------------------------------------------- FreeInit
def _freq_grid(n: int) -> torch.Tensor:
    """Normalised frequencies on the fftshift-ed grid: ``2(k - n//2)/n`` for k = 0..n-1, so the
    DC sits at index ``n//2`` (where fftshift puts it for even and odd n) with value exactly 0,
    and the grid is symmetric for odd n. diffusers uses ``2k/n - 1``: the same for even n,
    shifted by 1/n for odd n (DC weight below 1, asymmetric filter)."""
    return (torch.arange(n, dtype=torch.float64) - (n // 2)) * (2.0 / n)


def freeinit_filter(
    shape,
    *,
    kind: str = "butterworth",
    spatial_cutoff: float = 0.25,
    temporal_cutoff: float = 0.25,
    order: float = 4,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """FreeInit's low-pass filter (Wu et al. 2023, arXiv 2312.07537) on the fftshift-ed
    frequency grid of the last three dims (T, H, W) of ``shape``.

    With normalised frequencies ``f = 2(k - n//2)/n`` per axis and
    ``d² = (d_s/d_t · f_t)² + f_h² + f_w²`` (``d_s``, ``d_t``: the cut-offs):

    * butterworth: ``1 / (1 + (d²/d_s²)^order)``;
    * gaussian: ``exp(-d² / (2 d_s²))``;
    * ideal: ``1`` where ``d² <= d_s²``, else ``0``.

    Equal to diffusers' ``FreeInitMixin._get_free_init_freq_filter`` for even sizes (for the
    butterworth and gaussian kinds); for odd sizes the DC weight is exactly 1 and the filter is
    symmetric (diffusers' grid ``2k/n - 1`` is off by ``1/n`` there), and the ideal cut-off is
    ``d² <= d_s²`` (diffusers writes ``d² <= 2·d_s``). Built in one vectorised float64 pass.
    Returns shape ``(1, ..., 1, T, H, W)`` with ``len(shape)`` dims, broadcastable to the data.
    """
    shape = check_shape("shape", shape)
    if len(shape) < 3:
        raise ValueError(f"shape must have at least 3 dims (.., T, H, W), got {shape}")
    if any(s < 1 for s in shape[-3:]):
        raise ValueError(f"shape's last 3 dims (T, H, W) must be >= 1, got {shape}")
    check_choice("kind", kind, FILTER_KINDS)
    ds = check_float("spatial_cutoff", spatial_cutoff, low=0.0, low_open=True)
    dt = check_float("temporal_cutoff", temporal_cutoff, low=0.0, low_open=True)
    order = check_float("order", order, low=0.0, low_open=True)
    dtype = check_floating_dtype("dtype", dtype)
    t, h, w = (_freq_grid(n) for n in shape[-3:])
    d2 = ((ds / dt) * t).square()[:, None, None] + h.square()[:, None] + w.square()
    if kind == "butterworth":
        filt = 1.0 / (1.0 + (d2 / (ds * ds)) ** order)
    elif kind == "gaussian":
        filt = torch.exp(-d2 / (2.0 * ds * ds))
    else:
        filt = (d2 <= ds * ds).to(torch.float64)
    filt = filt.reshape((1,) * (len(shape) - 3) + filt.shape)
    return filt.to(device=device, dtype=dtype)


def freeinit_noise_variance(filter: torch.Tensor, *, variance_preserving: bool = True):
    """Per-frequency variance of the re-initialised noise for unit noise in both bands:
    ``L² + (1 - L)²`` for the classic mix (below 1 between the bands, 1/2 where L = 1/2),
    ``L² + (1 - L²) = 1`` with ``variance_preserving``. Float64, the filter's shape."""
    check_tensor("filter", filter)
    check_bool("variance_preserving", variance_preserving)
    lo = filter.to(torch.float64)
    if variance_preserving:
        return lo.square() + (1.0 - lo.square()).clamp_min(0.0)
    return lo.square() + (1.0 - lo).square()


def freeinit(
    x0: torch.Tensor,
    noise: torch.Tensor,
    sigma,
    *,
    filter: torch.Tensor,
    path=None,
    variance_preserving: bool = True,
    generator=None,
) -> torch.Tensor:
    """FreeInit's noise re-initialisation (arXiv 2312.07537) for any path of
    :mod:`vidnoise.paths`.

    ``z = path.add_noise(x0, noise, sigma)`` re-noises the clean estimate to the start level
    with the path's own formula (:class:`~vidnoise.paths.FlowPath` ``(1-σ)x0 + σε``,
    :class:`~vidnoise.paths.EDMPath` ``x0 + σε``, :class:`~vidnoise.paths.VPPath` with
    ``sigma`` the integer timestep); ``r = path.add_noise(0, ε', sigma)`` is the path's noise
    term for fresh noise ``ε'``. Over the last three dims (T, H, W), with ``L`` the
    (fftshift-ed) ``filter`` and FFT ``𝓕``:

        out = 𝓕⁻¹( L·𝓕(z) + H·𝓕(r) ),   H = √(1 - L²)   (variance_preserving, default)
                                          H = 1 - L       (the paper's and diffusers' mix)

    With ``H = √(1-L²)`` the noise part has exactly the path's variance at every frequency
    (``L² + H² = 1``); the classic mix loses ``1 - L² - (1-L)² = 2L(1-L)`` of it (half at
    ``L = 1/2``; see :func:`freeinit_noise_variance`). The classic mix with
    :class:`~vidnoise.paths.VPPath` at its zero-SNR terminal step equals diffusers'
    ``_apply_freq_filter`` of the scheduler's ``add_noise``.

    Note: for a flow path at ``σ = 1`` the re-noised ``z`` is ``noise`` itself (no trace of
    ``x0``), so the low band keeps the initial noise; use ``σ < 1`` to carry ``x0``.

    Args:
        x0: clean estimate (..., T, H, W); noise: the initial noise, same shape.
        sigma: the path's level (float, (B,) tensor; VP: integer timestep).
        filter: from :func:`freeinit_filter`, broadcastable to ``x0`` with the same (T, H, W).
        path: a path object with ``add_noise(x0, noise, sigma)`` (default ``FlowPath()``).
        generator: for ``ε'`` (a generator, one per sample, or a NoiseKey).
    """
    from vidnoise.paths import FlowPath

    check_tensor("x0", x0)
    check_tensor("noise", noise)
    check_tensor("filter", filter)
    check_bool("variance_preserving", variance_preserving)
    if x0.dim() < 3:
        raise ValueError(f"x0 must have at least 3 dims (.., T, H, W), got {tuple(x0.shape)}")
    if noise.shape != x0.shape:
        raise ValueError(
            f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}"
        )
    if tuple(filter.shape[-3:]) != tuple(x0.shape[-3:]) or filter.dim() > x0.dim():
        raise ValueError(
            f"filter must end in x0's (T, H, W) = {tuple(x0.shape[-3:])} and broadcast to x0 "
            f"{tuple(x0.shape)}, got {tuple(filter.shape)}"
        )
    path = FlowPath() if path is None else path
    if not callable(getattr(path, "add_noise", None)):
        raise TypeError(f"path must have an add_noise method, got {type(path).__name__}")
    wd = work_dtype(x0.dtype)
    src = _check_source(generator, x0.shape[0])
    z = path.add_noise(x0.to(wd), noise.to(wd), sigma)
    fresh = normal_like_source(x0.shape, src, device=x0.device, dtype=wd)
    r = path.add_noise(torch.zeros_like(fresh), fresh, sigma)
    dims = (-3, -2, -1)
    lo = torch.fft.ifftshift(filter.to(device=x0.device, dtype=wd), dim=dims)
    hi = (1.0 - lo * lo).clamp_min_(0.0).sqrt_() if variance_preserving else 1.0 - lo
    mirrored = torch.roll(torch.flip(lo, dims=dims), shifts=(1, 1, 1), dims=dims)
    if torch.equal(lo, mirrored):
        # L[k] = L[-k] (every filter of freeinit_filter): the mixed spectrum stays Hermitian,
        # so half-spectrum real FFTs give the same result as fftn + real at half the work
        half = x0.shape[-1] // 2 + 1
        mixed = torch.fft.rfftn(z, dim=dims).mul_(lo[..., :half])
        mixed.add_(torch.fft.rfftn(r, dim=dims).mul_(hi[..., :half]))
        out = torch.fft.irfftn(mixed, s=tuple(x0.shape[-3:]), dim=dims)
    else:  # an asymmetric filter (e.g. diffusers' for odd sizes): the real part, as diffusers
        mixed = torch.fft.fftn(z, dim=dims).mul_(lo).add_(torch.fft.fftn(r, dim=dims).mul_(hi))
        out = torch.fft.ifftn(mixed, dim=dims).real
    return out.to(x0.dtype)


# ----------------------------------------------------------------------------- warped noise
def warp_noise(
    noise: torch.Tensor,
    flow: torch.Tensor,
    *,
    strength: float | None = None,
    subpixels: int = 4,
    generator=None,
) -> torch.Tensor:
    """Warp a frame of unit white noise along a forward optical flow, keeping it exactly
    N(0, 1) and white (integral-noise style: Chang et al. 2024, "How I Warped Your Noise").

    ``noise`` is (B, C, H, W); ``flow`` (B, 2, H, W) holds each source pixel's displacement in
    pixels, ``flow[:, 0]`` along x (W), ``flow[:, 1]`` along y (H). Each pixel is split into
    ``k x k`` sub-pixels (``k = subpixels``, a power of two) drawn conditionally on the pixel,
    ``s = n/k + (ζ - mean(ζ))``, ζ iid N(0, 1): the k² values are iid N(0, 1) and sum to
    ``k·n``. Each sub-pixel moves with the flow (bilinearly interpolated at its centre) to the
    pixel containing its new centre. A target pixel that receives the set ``S`` of sub-pixels
    takes ``Σ_S s / √|S|`` (the sum renormalised by the square root of the summed squared
    unit weights); a pixel that receives none is filled with fresh noise. The sets are
    disjoint, so the result is exactly iid N(0, 1): white per frame, for any flow. A pixel
    whose sub-pixels all land in one target contributes ``k·n`` directly (the same sum, no
    rounding), so zero flow is exactly the identity and an integer translation exactly a
    shift (fresh noise where the frame uncovers).

    ``strength`` (in [0, 1], default 1) blends variance-preservingly with fresh noise:
    ``strength·warped + √(1 - strength²)·fresh``.

    ``generator`` (a generator, one per sample, or a NoiseKey with a (B, C, H, W) origin)
    draws ζ (B, C, H, W·k², pixel-major), then the fill, then the blend noise.
    """
    check_tensor("noise", noise, ndims=(4,))
    check_tensor("flow", flow, ndims=(4,))
    b, c, h, w = noise.shape
    if tuple(flow.shape) != (b, 2, h, w):
        raise ValueError(
            f"flow must have shape (B, 2, H, W) = {(b, 2, h, w)} for noise {tuple(noise.shape)} "
            f"(flow[:, 0] = x displacement, flow[:, 1] = y), got {tuple(flow.shape)}"
        )
    k = check_int("subpixels", subpixels, minimum=1)
    if k & (k - 1):
        raise ValueError(f"subpixels must be a power of two (1, 2, 4, 8, ...), got {k}")
    if strength is not None:
        strength = check_float("strength", strength, low=0.0, high=1.0)
    src = _check_source(generator, b)
    wd = work_dtype(noise.dtype)
    dev = noise.device
    if noise.numel() == 0:
        return noise.clone()
    n = noise.to(wd)
    fl = flow.to(device=dev, dtype=wd)
    if k > 1:
        fl = F.interpolate(fl, scale_factor=k, mode="bilinear", align_corners=False)
    hk, wk, kk = h * k, w * k, k * k
    # sub-pixel centres in pixel units are (j + 1/2)/k - 1/2; target = round(centre + flow)
    bx = (torch.arange(wk, device=dev, dtype=wd) + 0.5) / k
    by = (torch.arange(hk, device=dev, dtype=wd) + 0.5) / k
    tx = torch.floor(bx + fl[:, 0]).to(torch.int64)
    ty = torch.floor(by[:, None] + fl[:, 1]).to(torch.int64)
    valid = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    tidx = torch.where(valid, ty * w + tx, h * w)  # (B, hk, wk); h*w = "left the frame"
    # pixel-major layout (B, H, W, k²): each pixel's sub-pixels contiguous
    tidx = tidx.view(b, h, k, w, k).permute(0, 1, 3, 2, 4).reshape(b, h, w, kk)
    lo, hi = tidx.aminmax(dim=-1)
    whole = (lo == hi) & (lo < h * w)  # all k² sub-pixels land in one pixel of the frame
    if isinstance(src, NoiseKey):
        o = _key_origin(src, 4)
        zeta = src.derive("warp_sub").at((o[0], o[1], o[2], o[3] * kk)).randn(
            (b, c, h, w * kk), dtype=wd, device=dev)
    else:
        zeta = normal_like_source((b, c, h, w * kk), src, device=dev, dtype=wd)
    sub = zeta.view(b, c, h, w, kk)
    # s = n/k + (ζ - mean ζ): iid N(0, 1) sub-pixels summing to k·n
    sub.sub_(sub.mean(dim=-1, keepdim=True)).add_((n / k).unsqueeze(-1))
    # a whole pixel contributes k·n (the same sum, exactly) through its first sub-pixel
    sub.mul_((~whole).to(wd)[:, None, :, :, None])
    sub[..., 0].addcmul_(whole.to(wd)[:, None], n, value=float(k))
    idx = tidx.view(b, 1, h * w * kk)
    sums = torch.zeros(b, c, h * w + 1, dtype=wd, device=dev)
    sums.scatter_add_(2, idx.expand(b, c, h * w * kk), sub.view(b, c, h * w * kk))
    counts = torch.zeros(b, 1, h * w + 1, dtype=wd, device=dev)
    counts.scatter_add_(2, idx, torch.ones(b, 1, h * w * kk, dtype=wd, device=dev))
    sums, counts = sums[..., : h * w], counts[..., : h * w]
    if isinstance(src, NoiseKey):
        fill = src.derive("warp_fill").randn((b, c, h, w), dtype=wd, device=dev)
    else:
        fill = normal_like_source((b, c, h, w), src, device=dev, dtype=wd)
    out = torch.where(counts > 0, sums / counts.clamp_min(1.0).sqrt(), fill.view(b, c, h * w))
    out = out.view(b, c, h, w)
    if strength is not None and strength < 1.0:
        if isinstance(src, NoiseKey):
            blend = src.derive("warp_blend").randn((b, c, h, w), dtype=wd, device=dev)
        else:
            blend = normal_like_source((b, c, h, w), src, device=dev, dtype=wd)
        out = out.mul_(strength).add_(blend, alpha=math.sqrt(1.0 - strength * strength))
    return out.to(noise.dtype)
