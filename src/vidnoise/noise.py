"""Seeded Gaussian noise, block-correlated noise, variance-exact resampling and noise pyramids.

Every random function takes ``generator=``: one ``torch.Generator``, or a sequence of them
with one per item of dim 0. With a sequence, item ``i`` depends only on generator ``i``, so
the same seed gives the same sample whatever the batch size or the sample's position in it.
Noise is drawn in float32 (float64 if that dtype is asked for) and then cast, so
half-precision noise is the rounding of the float32 draw.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Sequence

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

__all__ = [
    "randn",
    "rand",
    "block_noise",
    "resample_noise",
    "resample_variance",
    "noise_pyramid",
    "as_generators",
]

GeneratorLike = torch.Generator | Sequence[torch.Generator] | None


# ----------------------------------------------------------------------------- generators
def as_generators(generator: GeneratorLike, batch: int, *, name: str = "generator"):
    """Normalise ``generator`` to ``None``, one generator, or a list of ``batch`` generators.

    Raises ``TypeError`` for anything else and ``ValueError`` when a sequence does not have
    one generator per item of dim 0.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, Sequence) and not isinstance(generator, str):
        gens = list(generator)
        for g in gens:
            if not isinstance(g, torch.Generator):
                raise TypeError(
                    f"{name} must be a torch.Generator or a sequence of them, "
                    f"got an item of type {type(g).__name__}"
                )
        if len(gens) != batch:
            raise ValueError(
                f"{name} as a sequence must have one generator per item of dim 0 "
                f"({batch}), got {len(gens)}"
            )
        return gens
    raise TypeError(
        f"{name} must be a torch.Generator, a sequence of them, or None, "
        f"got {type(generator).__name__}"
    )


def _resolve_device(generator, device, name="generator") -> torch.device:
    gen_dev = None
    if isinstance(generator, torch.Generator):
        gen_dev = generator.device
    elif isinstance(generator, list) and generator:
        gen_dev = generator[0].device
        for g in generator:
            if g.device != gen_dev:
                raise ValueError(
                    f"{name}: all generators must be on one device, got {gen_dev} and {g.device}"
                )
    if device is None:
        return gen_dev if gen_dev is not None else torch.device("cpu")
    device = torch.device(device)
    if gen_dev is not None and gen_dev.type != device.type:
        raise ValueError(
            f"{name} is on device {gen_dev} but device={device} was asked for; "
            f"pass a generator created on {device.type} or leave device=None"
        )
    return device


def _draw(kind: str, shape, generator, device, dtype, std: float = 1.0) -> torch.Tensor:
    shape = check_shape("shape", shape)
    dtype = check_floating_dtype("dtype", dtype)
    gens = as_generators(generator, shape[0] if shape else 0)
    if isinstance(gens, list) and not shape:
        raise ValueError("generator as a sequence needs a shape with at least one dim")
    device = _resolve_device(gens, device)
    draw_dtype = work_dtype(dtype)
    out = torch.empty(shape, dtype=draw_dtype, device=device)
    if isinstance(gens, list):
        for i, g in enumerate(gens):
            view = out[i]
            if kind == "normal":
                view.normal_(0.0, std, generator=g)
            else:
                view.uniform_(generator=g)
    elif kind == "normal":
        out.normal_(0.0, std, generator=gens)
    else:
        out.uniform_(generator=gens)
    if draw_dtype == dtype:
        return out
    out = out.to(dtype)
    if kind == "uniform":  # a draw within half an ulp of 1 rounds up to 1.0 in half precision
        below_one = torch.nextafter(torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype))
        out = out.clamp_max_(below_one.to(device))
    return out


def randn(shape, *, generator: GeneratorLike = None, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise of ``shape``.

    ``generator`` may be one ``torch.Generator`` or a sequence with one per item of dim 0;
    with a sequence, item ``i`` is ``torch.randn(shape[1:], generator=generator[i])``, so it
    depends only on generator ``i``. The draw is made in float32 (float64 when
    ``dtype=torch.float64``) and cast to ``dtype``.

    Args:
        shape: an int or a sequence of non-negative ints.
        generator: None, a generator, or one generator per item of dim 0.
        device: defaults to the generator's device (CPU without one); must match it.
        dtype: a floating dtype (default: torch's default dtype).
    """
    return _draw("normal", shape, generator, device, dtype)


def rand(shape, *, generator: GeneratorLike = None, device=None, dtype=None) -> torch.Tensor:
    """Uniform noise on [0, 1) of ``shape``, with the same generator rules as :func:`randn`.

    Half-precision values are the rounding of the float32 draw, except that a draw which
    rounds up to 1.0 (within half an ulp of 1: about 2.4e-4 of fp16 draws, 2e-3 of bf16) is
    set to the largest value below 1, so the result stays in [0, 1) in every dtype.
    """
    return _draw("uniform", shape, generator, device, dtype)


# ----------------------------------------------------------------------------- block noise
def _block_basis(m: int, gamma: float) -> tuple[torch.Tensor, bool]:
    """Mixing matrix ``M`` (m x k, float64) with ``M Mᵀ = (1+γ)I - γ·11ᵀ`` (docs/math.md §3).

    The block covariance has eigenvalue ``1-(m-1)γ`` on the mean direction ``1/√m`` and
    ``1+γ`` on its orthogonal complement (spanned here by Helmert vectors). ``n = M w`` with
    ``w ~ N(0, I_k)`` has exactly that covariance. At the singular end ``γ = 1/(m-1)`` the mean
    eigenvalue is 0, its column is dropped and ``k = m - 1`` (fewer normals than elements);
    the returned flag says so. Raises ``ValueError`` naming ``m`` (an int >= 1) or ``gamma``
    (a number in ``[0, 1/(m-1)]``, the range where the covariance is positive semi-definite).
    """
    m = check_int("m", m, minimum=1)
    gamma = check_float("gamma", gamma, low=0.0, high=1.0 / (m - 1) if m > 1 else None)
    return _block_basis_cached(m, gamma)


@functools.lru_cache(maxsize=64)
def _block_basis_cached(m: int, gamma: float) -> tuple[torch.Tensor, bool]:
    basis = torch.zeros(m, m, dtype=torch.float64)
    basis[:, 0] = 1.0 / math.sqrt(m)
    for j in range(1, m):  # Helmert: (1, .., 1, -j, 0, ..) / sqrt(j (j+1))
        basis[:j, j] = 1.0
        basis[j, j] = -float(j)
        basis[:, j] /= math.sqrt(j * (j + 1))
    lam_mean = max(1.0 - (m - 1) * gamma, 0.0)
    scales = torch.full((m,), math.sqrt(1.0 + gamma), dtype=torch.float64)
    scales[0] = math.sqrt(lam_mean)
    mix = basis * scales
    singular = m > 1 and lam_mean <= 1e-12
    if singular:
        mix = mix[:, 1:]
    return mix.contiguous(), singular


def _check_block(shape: tuple[int, ...], block) -> tuple[int, ...]:
    if isinstance(block, int) and not isinstance(block, bool):
        block = (block,)
    if not isinstance(block, Sequence) or not block:
        raise TypeError(f"block must be a non-empty tuple of ints, got {block!r}")
    block = tuple(check_int("block", b, minimum=1) for b in block)
    if len(block) > len(shape):
        raise ValueError(
            f"block {block} has more dims than shape {shape}; blocks tile the last "
            f"len(block) dims"
        )
    tail = shape[len(shape) - len(block) :]
    for size, b in zip(tail, block):
        if size % b:
            raise ValueError(
                f"shape {shape}: the last {len(block)} dims {tail} must be divisible by "
                f"block {block}"
            )
    return block


def block_noise(
    shape,
    *,
    gamma: float = 1 / 3,
    block=(2, 2),
    generator: GeneratorLike = None,
    device=None,
    dtype=None,
) -> torch.Tensor:
    """Gaussian noise with correlation ``-gamma`` inside blocks, independent across blocks.

    Blocks tile the last ``len(block)`` dims (``(2, 2)`` spatial, ``(1, 2, 2)`` on (T, H, W)).
    Each block of ``m = prod(block)`` elements has covariance ``(1+γ)I - γ·11ᵀ``: unit
    variance, correlation ``-γ`` between any two elements of the block. Valid for
    ``0 <= γ <= 1/(m-1)``. The closed form (docs/math.md §3) with ``z ~ N(0, I)`` and
    ``b`` the block mean of ``z`` is ``n = sqrt(1+γ)(z - b) + sqrt(1-(m-1)γ)·b``; it is
    implemented through the block eigenbasis (``_block_basis``), with no per-block loop and
    no Cholesky. At the singular end ``γ = 1/(m-1)`` only ``m-1`` normals are drawn per block
    and every block sums to zero up to rounding.

    This is the renoising noise of Pyramid-Flow's stage jump (γ = 1/3 on 2x2 blocks).
    With a sequence of generators, item ``i`` of dim 0 depends only on generator ``i``.
    """
    shape = check_shape("shape", shape)
    dtype = check_floating_dtype("dtype", dtype)
    block = _check_block(shape, block)
    m = math.prod(block)
    gmax = 1.0 / (m - 1) if m > 1 else math.inf
    gamma = check_float("gamma", gamma, low=0.0, high=gmax if m > 1 else None)
    nb = len(block)
    prefix = shape[: len(shape) - nb]
    counts = tuple(s // b for s, b in zip(shape[len(shape) - nb :], block))
    gens = as_generators(generator, shape[0] if shape else 0)
    if isinstance(gens, list) and not prefix and block[0] > 1:
        raise ValueError(
            f"with one generator per item of dim 0, block {block} must not mix items of "
            f"dim 0 (its first size must be 1 when it covers dim 0)"
        )
    draw_dtype = work_dtype(dtype)
    if m == 1 or gamma == 0.0:
        return randn(shape, generator=generator, device=device, dtype=dtype)
    mix, singular = _block_basis(m, gamma)
    k = mix.shape[1]
    device = _resolve_device(gens, device)
    if singular and block[-2:] == (2, 2) and all(b == 1 for b in block[:-2]):
        return _block_noise_2x2_singular(shape, prefix, counts, gens, device, dtype)
    # w: (*prefix, *counts, k) iid normals; y = w @ Mᵀ: (*prefix, *counts, m)
    w = randn((*prefix, *counts, k), generator=gens, device=device, dtype=draw_dtype)
    y = torch.matmul(w, mix.to(device=device, dtype=draw_dtype).t())
    # interleave: (*prefix, c0, .., c_{nb-1}, b0, .., b_{nb-1}) -> (*prefix, c0, b0, c1, b1, ..)
    y = y.view(*prefix, *counts, *block)
    p = len(prefix)
    order = list(range(p))
    for i in range(nb):
        order += [p + i, p + nb + i]
    out = y.permute(order).reshape(shape)
    return out if draw_dtype == dtype else out.to(dtype)


@functools.lru_cache(maxsize=16)
def _plus_minus_sqrt2(dtype, device) -> torch.Tensor:
    """The constant ``(√2, -√2)``, made once per dtype and device (no copy per call)."""
    return torch.tensor([math.sqrt(2.0), -math.sqrt(2.0)], dtype=dtype, device=device)


def _block_noise_2x2_singular(shape, prefix, counts, gens, device, dtype) -> torch.Tensor:
    """Fast path for 2x2 blocks at the singular end γ = 1/3 (Pyramid-Flow's case).

    Writing the block as rows a ∈ {0, 1} and columns b ∈ {0, 1}, the covariance
    ``(4/3)I - (1/3)11ᵀ`` is reproduced by three independent normals per block,
    ``X ~ N(0, 1/3)`` and ``Y, W ~ N(0, 2/3)``:

        n[0, b] =  X + (-1)^b·Y,        n[1, b] = -X + (-1)^b·W

    (variance 1/3 + 2/3 = 1; any two entries of the block have covariance -1/3; the block sum
    is 0). ``X, Y, W`` are drawn as ``N(0, 1/3)`` planes, ``-X`` is written beside ``X``, and
    one broadcast ``addcmul`` with the constants ``±√2`` writes the interleaved output in a
    single contiguous pass: 3/4 of the normals of ``torch.randn`` and two light passes.
    """
    draw_dtype = work_dtype(dtype)
    hc, wc = counts[-2], counts[-1]
    mid = counts[:-2]  # leading block dims of size 1 (e.g. T for (1, 2, 2))
    lead = (*prefix, *mid)
    buf = torch.empty((4, *lead, hc, wc), dtype=draw_dtype, device=device)
    std = math.sqrt(1.0 / 3.0)
    if isinstance(gens, list):  # item i of dim 0 from generator i only
        for i, g in enumerate(gens):
            for k in range(3):
                buf[k, i].normal_(0.0, std, generator=g)
    else:
        buf[:3].normal_(0.0, std, generator=gens)
    torch.neg(buf[0], out=buf[3])  # -X
    x_pm = buf[0::3].movedim(0, -2)  # (*lead, hc, 2, wc): [X, -X] by row a
    y_w = buf[1:3].movedim(0, -2)  # (*lead, hc, 2, wc): [Y, W] by row a
    sign = _plus_minus_sqrt2(draw_dtype, device)
    out = torch.empty(shape, dtype=draw_dtype, device=device)
    # n[.., a, .., b] = (±X)[a] + (Y|W)[a]·(±√2)[b], written straight into (.., hc, 2, wc, 2)
    torch.addcmul(x_pm.unsqueeze(-1), y_w.unsqueeze(-1), sign,
                  out=out.view(*lead, hc, 2, wc, 2))
    return out if draw_dtype == dtype else out.to(dtype)


# ----------------------------------------------------------------------------- resampling
_MODES_2D = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
_MODES_3D = ("nearest", "nearest-exact", "trilinear", "area")
_LINEAR = ("bilinear", "bicubic", "trilinear")


def _torch_mode(mode: str, dims: int) -> str:
    check_choice("dims", dims, (2, 3))
    if dims == 3 and mode == "bilinear":
        return "trilinear"
    allowed = _MODES_2D if dims == 2 else _MODES_3D + ("bilinear",)
    check_choice("mode", mode, allowed)
    return mode


def _interp_kwargs(mode: str, antialias: bool) -> dict:
    kwargs = {"mode": mode}
    if mode in _LINEAR:
        kwargs["align_corners"] = False
    if antialias:
        kwargs["antialias"] = True
    return kwargs


@functools.lru_cache(maxsize=256)
def _axis_weights(
    n_in: int, n_out: int, scale, mode: str, dims: int, axis: int, antialias: bool
) -> torch.Tensor:
    """The 1-D resampling matrix ``W`` (n_out x n_in, sparse COO, float64) of one axis of
    ``torch.nn.functional.interpolate`` (docs/math.md §2), read off torch itself.

    No identity matrix is built. Every tap of output ``i`` lies within ``R`` input samples of
    its centre ``c_i = (i + 1/2)·n_in/n_out - 1/2``, with ``R = 3·max(ratio, 1) + 4`` (bicubic
    with antialias, the widest kernel, reaches ``2·ratio + 1``; a ``scale_factor`` moves the
    centres by less than ``ratio``). So ``P = 2R + 2`` impulse combs ``e_r = Σ_k δ_{r+kP}``
    are resampled in one call; output ``i`` of comb ``r`` then holds ``W[i, j]`` for the one
    ``j ≡ r (mod P)`` within ``P/2`` of ``c_i``. Memory is ``O(P·(n_in + n_out))`` instead of
    ``O(n_in²)``. The other axes are resized 1 -> 1 (2 -> 2 for the last axis, which torch's
    antialiased kernels mishandle at width 1).
    """
    ratio = n_in / n_out
    if scale is not None:
        ratio = max(ratio, 1.0 / scale)
    reach = int(math.ceil(3.0 * max(ratio, 1.0))) + 4
    period = min(n_in, 2 * reach + 2)
    j = torch.arange(n_in)
    combs = (j.remainder(period).unsqueeze(0) == torch.arange(period).unsqueeze(1))
    other = [2 if d == dims - 1 else 1 for d in range(dims)]
    in_shape = list(other)
    in_shape[axis] = n_in
    view = [period, 1] + [n_in if d == axis else 1 for d in range(dims)]
    x = combs.to(torch.float64).reshape(view).expand(period, 1, *in_shape).contiguous()
    if scale is not None:
        sf = [1.0] * dims
        sf[axis] = scale
        extra = {"scale_factor": tuple(sf)}
    else:
        size = list(other)
        size[axis] = n_out
        extra = {"size": tuple(size)}
    y = F.interpolate(x, **extra, **_interp_kwargs(mode, antialias))
    index = [slice(None), 0] + [slice(None) if d == axis else 0 for d in range(dims)]
    y = y[tuple(index)]  # y[r, i] = W[i, j(r, i)]
    if y.shape[1] != n_out:
        raise RuntimeError("internal: resampling weight size mismatch")  # pragma: no cover
    rows = torch.arange(n_out).expand(period, n_out)
    r = torch.arange(period).unsqueeze(1).expand(period, n_out)
    if period == n_in:
        cols = r
    else:
        centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
        cols = r + period * torch.round((centre - r) / period).long()
    keep = (y != 0) & (cols >= 0) & (cols < n_in)
    w = torch.sparse_coo_tensor(
        torch.stack([rows[keep], cols[keep]]), y[keep], (n_out, n_in), dtype=torch.float64,
        check_invariants=True,
    )
    return w.coalesce()


def _sparse_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of two sparse COO matrices (torch's beta-state notice silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse.mm(a, b).coalesce()


def _row_sq_norms(w: torch.Tensor) -> torch.Tensor:
    """``Σ_j W_ij²`` of a sparse COO matrix (float64, dense vector of length n_rows)."""
    w = w.coalesce()
    out = torch.zeros(w.shape[0], dtype=torch.float64)
    return out.index_add_(0, w.indices()[0], w.values().square())


def _check_sizes(name: str, sizes, dims: int) -> tuple[int, ...]:
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
        sizes = (int(sizes),) * dims
    if isinstance(sizes, torch.Size):
        sizes = tuple(sizes)
    if not isinstance(sizes, Sequence) or isinstance(sizes, str):
        raise TypeError(f"{name} must be an int or a sequence of {dims} ints, got {sizes!r}")
    out = tuple(check_int(name, s, minimum=1) for s in sizes)
    if len(out) != dims:
        raise ValueError(f"{name} must have {dims} entries for dims={dims}, got {sizes!r}")
    return out


def _check_scale_factor(scale_factor, dims: int) -> tuple[float, ...]:
    """Accept a real, a numpy scalar, a 0-d or 1-d tensor, or a sequence of ``dims`` reals."""
    if isinstance(scale_factor, torch.Tensor):
        if scale_factor.dtype == torch.bool or scale_factor.is_complex():
            raise TypeError(f"scale_factor must be real, got dtype {scale_factor.dtype}")
        if scale_factor.dim() > 1 or scale_factor.device.type == "meta":
            raise ValueError(
                f"scale_factor as a tensor must be a 0-d or 1-d CPU tensor, got shape "
                f"{tuple(scale_factor.shape)} on {scale_factor.device}"
            )
        scale_factor = scale_factor.tolist()
    if isinstance(scale_factor, numbers.Real) and not isinstance(scale_factor, bool):
        scale_factor = (scale_factor,) * dims
    if not isinstance(scale_factor, Sequence) or isinstance(scale_factor, str):
        raise TypeError(
            f"scale_factor must be a positive real or a sequence of {dims} of them, "
            f"got {scale_factor!r} ({type(scale_factor).__name__})"
        )
    out = tuple(check_float("scale_factor", s, low=0.0, low_open=True) for s in scale_factor)
    if len(out) != dims:
        raise ValueError(f"scale_factor must have {dims} entries for dims={dims}, got {out}")
    return out


def _check_noise_mode(noise, mode, dims, antialias) -> str:
    """Check the noise tensor, ``dims``, ``mode`` and ``antialias``; return torch's mode."""
    check_choice("dims", dims, (2, 3))
    check_tensor("noise", noise, ndims=(4, 5) if dims == 2 else (5,))
    tmode = _torch_mode(mode, dims)
    check_bool("antialias", antialias)
    if antialias and tmode not in ("bilinear", "bicubic"):
        raise ValueError(
            f"antialias=True is only defined for mode 'bilinear' or 'bicubic' with dims=2, "
            f"got mode={mode!r}, dims={dims}"
        )
    return tmode


def _resample_args(noise, size, scale_factor, mode, dims, antialias):
    tmode = _check_noise_mode(noise, mode, dims, antialias)
    in_sizes = tuple(noise.shape[-dims:])
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    scales = None
    if size is not None:
        if isinstance(size, numbers.Integral) and not isinstance(size, bool):
            size = (int(size),) * dims
        size = check_shape("size", size)
        if len(size) != dims:
            raise ValueError(f"size must have {dims} entries for dims={dims}, got {size}")
        out_sizes = size
    else:
        scales = _check_scale_factor(scale_factor, dims)
        out_sizes = tuple(int(math.floor(n * s)) for n, s in zip(in_sizes, scales))
    for n_in, n_out in zip(in_sizes, out_sizes):
        if n_out < 1 or n_in < 1:
            raise ValueError(
                f"resampling noise of spatial size {in_sizes} to {out_sizes}: every size must "
                f"stay >= 1 (check size / scale_factor)"
            )
    return tmode, in_sizes, out_sizes, scales


def resample_variance(
    in_sizes, out_sizes, *, mode: str = "bilinear", dims: int = 2, antialias: bool = False,
    scale_factor=None,
) -> torch.Tensor:
    """Per-position variance ``Var(y_i) = Σ_j W_ij²`` of resampled unit white noise
    (docs/math.md §2).

    Returns a float64 tensor of shape ``out_sizes``: the outer product of the per-axis sums of
    squared 1-D weights (every mode of ``interpolate``, antialiased or not, is separable).
    For an exact 2x bilinear or area reduction every entry is 1/4.

    Args:
        in_sizes, out_sizes: ints >= 1 (one per resampled dim, or one int for all).
        mode, dims, antialias: as in :func:`resample_noise`.
        scale_factor: the ``scale_factor`` given to ``interpolate`` when ``out_sizes`` came
            from it (torch then places samples by the factor, not by the size ratio).
    """
    tmode = _torch_mode(mode, dims)
    check_bool("antialias", antialias)
    in_sizes = _check_sizes("in_sizes", in_sizes, dims)
    out_sizes = _check_sizes("out_sizes", out_sizes, dims)
    scales = None if scale_factor is None else _check_scale_factor(scale_factor, dims)
    var = torch.ones((), dtype=torch.float64)
    for axis, (n_in, n_out) in enumerate(zip(in_sizes, out_sizes)):
        sc = None if scales is None else scales[axis]
        v = _row_sq_norms(_axis_weights(n_in, n_out, sc, tmode, dims, axis, antialias))
        shape = [1] * dims
        shape[axis] = n_out
        var = var * v.reshape(shape)
    return var


def resample_noise(
    noise: torch.Tensor,
    size=None,
    *,
    scale_factor=None,
    mode: str = "bilinear",
    dims: int = 2,
    antialias: bool = False,
) -> torch.Tensor:
    """Resample white noise and rescale it to exactly unit variance at every position.

    Resampling is linear, ``y = W n``, so for unit white noise ``Var(y_i) = Σ_j W_ij²`` and
    the output is ``y_i / sqrt(Σ_j W_ij²)`` (docs/math.md §2). ``W`` is the map of
    ``torch.nn.functional.interpolate`` for the given ``mode``, ``size`` / ``scale_factor``
    and ``antialias`` (align_corners=False); it is separable, and its 1-D factors are read
    off torch in ``O(n)`` memory (no identity matrix).

    For an exact 2x bilinear or area reduction the factor is exactly 2 everywhere, i.e. this
    equals Pyramid-Flow's ``interpolate(noise, (h//2, w//2), mode='bilinear') * 2``. That
    constant is wrong for other cases (nearest: variance 4 after x2; bicubic 1.78; antialias
    0.38-0.61; odd sizes vary by position); this function is right for all of them.

    Upsampling is allowed: each output then has unit variance, but neighbouring outputs are
    correlated (variance scaling cannot remove that). Non-integer ratios also leave
    correlation between neighbours; measure it with :func:`vidnoise.diagnostics.noise_report`.
    Half-precision input is resampled in float32 (``_checks.work_dtype``) and cast back.

    Args:
        noise: (B, C, H, W) or (B, C, T, H, W) floating tensor of unit white noise.
        size / scale_factor: output size of the resampled dims (exactly one of them); a
            scale factor may be a real, a numpy scalar, a 0-d / 1-d tensor or a sequence.
        mode: 'nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area' ('trilinear' or
            'bilinear' for dims=3; bicubic is 2-D only).
        dims: 2 resamples (H, W) per frame (5-D input is treated frame by frame);
            3 resamples (T, H, W) of 5-D input.
        antialias: torch's antialias flag (bilinear / bicubic, dims=2 only).
    """
    tmode, in_sizes, out_sizes, scales = _resample_args(
        noise, size, scale_factor, mode, dims, antialias
    )
    x, restore = _frames_as_channels(noise, dims)
    if x.numel() == 0:
        return restore(x.new_zeros((*x.shape[:2], *out_sizes)))
    if _exact_half(tmode, antialias, in_sizes, out_sizes) and dims == 2:
        # exact 2x bilinear/area reduction == 2x2 mean; the factor sqrt(1/var) is exactly 2,
        # so sum/2 in one pass (== interpolate(...) * 2 up to rounding)
        return restore(F.avg_pool2d(x, 2, divisor_override=2))
    y = _resample_raw(x, tmode, in_sizes, out_sizes, scales, dims, antialias)
    inv = _inverse_std(
        ((in_sizes, out_sizes, scales),), tmode, dims, antialias, y.device, y.dtype
    )
    return restore(y.mul_(inv))  # a float where uniform (e.g. exactly 2 at 2x), else a tensor


def _frames_as_channels(noise: torch.Tensor, dims: int):
    """(B, C, T, H, W) -> (B, C*T, H, W) for framewise 2-D resampling (a free view), in the
    working dtype; returns the tensor and the function that undoes both."""
    framewise = dims == 2 and noise.dim() == 5
    x = noise
    lead = tuple(noise.shape[:3]) if framewise else None
    if framewise:
        x = x.reshape(lead[0], lead[1] * lead[2], *x.shape[-2:])
    x = x.to(work_dtype(noise.dtype))

    def restore(y: torch.Tensor) -> torch.Tensor:
        if framewise:
            y = y.reshape(*lead, *y.shape[-2:])
        return y.to(noise.dtype) if y.dtype != noise.dtype else y

    return x, restore


def _exact_half(tmode, antialias, in_sizes, out_sizes) -> bool:
    """True where the resampling is an exact 2x mean (bilinear/trilinear/area, no antialias,
    every size halved exactly): then ``W`` averages disjoint pairs per axis."""
    return (
        tmode in ("bilinear", "trilinear", "area")
        and not antialias
        and all(n == 2 * o for n, o in zip(in_sizes, out_sizes))
    )


def _resample_raw(x, tmode, in_sizes, out_sizes, scales, dims, antialias) -> torch.Tensor:
    """``y = W x`` (no rescaling). torch's antialiased kernels apply a wrong map along H when
    the output width is 1, so that case applies the 1-D factors of ``W`` directly."""
    if _exact_half(tmode, antialias, in_sizes, out_sizes):
        return (F.avg_pool2d if dims == 2 else F.avg_pool3d)(x, 2)
    if antialias and out_sizes[-1] == 1:
        mats = [
            _axis_weights(n, o, None if scales is None else scales[a], tmode, dims, a, True)
            .to_dense().to(device=x.device, dtype=x.dtype)
            for a, (n, o) in enumerate(zip(in_sizes, out_sizes))
        ]
        return torch.einsum("bchw,oh,pw->bcop", x, mats[0], mats[1])
    kwargs = {"scale_factor": scales} if scales is not None else {"size": out_sizes}
    return F.interpolate(x, **kwargs, **_interp_kwargs(tmode, antialias))


@functools.lru_cache(maxsize=256)
def _inverse_std(steps, mode, dims, antialias, device, dtype):
    """``1/sqrt(Σ_j C_ij²)`` per output position of the composed map ``C = W_k ··· W_1`` of
    ``steps`` (each ``(in_sizes, out_sizes, scales)``), per axis by sparse products
    (docs/math.md §2), computed once per configuration: a Python float when it is the same
    everywhere, else a tensor on ``device`` in ``dtype``."""
    var = torch.ones((), dtype=torch.float64)
    for axis in range(dims):
        comp = None
        for in_sizes, out_sizes, scales in steps:
            sc = None if scales is None else scales[axis]
            w = _axis_weights(
                in_sizes[axis], out_sizes[axis], sc, mode, dims, axis, antialias
            )
            comp = w if comp is None else _sparse_mm(w, comp)
        v = _row_sq_norms(comp)
        shape = [1] * dims
        shape[axis] = v.shape[0]
        var = var * v.reshape(shape)
    inv = var.rsqrt()
    first = inv.flatten()[0]
    if torch.equal(inv, first.expand_as(inv)):
        return float(first)
    return inv.to(device=device, dtype=dtype)


def noise_pyramid(
    noise: torch.Tensor,
    levels: int,
    *,
    mode: str = "bilinear",
    dims: int = 2,
    antialias: bool = False,
) -> list[torch.Tensor]:
    """Noise pyramid, coarsest level first, finest (``noise`` itself) last; every level has
    exactly unit variance per position, for every mode, size and depth (docs/math.md §2).

    Level sizes halve (floor) at each step: ``(h//2, w//2)`` (and ``t//2`` with ``dims=3``).
    The unnormalised chain is nested, ``u_{k-1} = W_k u_k`` (``W_k`` the ``interpolate`` map
    of ``mode``), so ``u_k = C_k n`` with ``C_k = W_k ··· W_1`` composed from the finest
    level ``n``, and level ``k`` is ``u_k / sqrt(diag(C_k C_kᵀ))``: the composed row norms,
    not the white-noise factor of the last step (after one step the noise is no longer white
    unless that step averaged disjoint pairs). For bilinear or area at even sizes every step
    averages disjoint 2x2 pairs, the factor is exactly 2 per level, and the pyramid equals
    Pyramid-Flow's ``interpolate(n_k, (h/2, w/2)) * 2`` level by level (each coarse value is
    twice the mean of its 2x2 parents); the composition restarts at each such white level.
    Half-precision noise is worked in float32 (``_checks.work_dtype``) and cast back.
    ``mode``, ``dims`` and ``antialias`` are as in :func:`resample_noise`.

    Raises ``ValueError`` naming ``levels`` when a halving would reach size zero, and naming
    ``noise`` when it has a zero-size resampled axis.
    """
    tmode = _check_noise_mode(noise, mode, dims, antialias)
    levels = check_int("levels", levels, minimum=1)
    sizes = tuple(noise.shape[-dims:])
    if min(sizes) < 1:
        raise ValueError(
            f"noise has a zero-size resampled axis (last {dims} dims {sizes}); a pyramid "
            f"needs every one of them >= 1"
        )
    smallest = tuple(s >> (levels - 1) for s in sizes)
    if min(smallest) < 1:
        raise ValueError(
            f"levels={levels}: halving sizes {sizes} {levels - 1} times reaches "
            f"{smallest}; use levels <= {int(math.log2(min(sizes))) + 1}"
        )
    out = [noise]
    if levels == 1:
        return out
    x, restore = _frames_as_channels(noise, dims)
    raw = x  # u_k: the unnormalised chain since the last white level
    steps: tuple = ()  # the steps composed since the last white level
    white = True  # is ``raw`` itself unit white noise?
    for _ in range(levels - 1):
        cur = tuple(raw.shape[-dims:])
        target = tuple(s // 2 for s in cur)
        if white and _exact_half(tmode, antialias, cur, target):
            # disjoint 2x2 (2x2x2) means of white noise: white again, factor exactly 2 (2√2)
            if x.numel() == 0:
                raw = raw.new_zeros((*raw.shape[:2], *target))
            elif dims == 2:
                raw = F.avg_pool2d(raw, 2, divisor_override=2)
            else:
                raw = F.avg_pool3d(raw, 2, divisor_override=8).mul_(math.sqrt(8.0))
            out.append(restore(raw))
            continue
        white = False
        steps = steps + ((cur, target, None),)
        if x.numel() == 0:
            raw = raw.new_zeros((*raw.shape[:2], *target))
        else:
            raw = _resample_raw(raw, tmode, cur, target, None, dims, antialias)
        inv = _inverse_std(steps, tmode, dims, antialias, raw.device, raw.dtype)
        out.append(restore(raw * inv))
    return out[::-1]
