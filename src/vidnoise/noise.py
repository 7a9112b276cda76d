"""Seeded Gaussian noise, block-correlated noise, variance-exact resampling and noise pyramids.

Every random function takes ``generator=``: one ``torch.Generator``, or a sequence of them
with one per item of dim 0. With a sequence, item ``i`` depends only on generator ``i``, so
the same seed gives the same sample whatever the batch size or the sample's position in it.
The normal draws (:func:`randn`, :func:`block_noise`) also take a :class:`NoiseKey`: keyed
noise, a pure function of the key and the global coordinates, so a tensor drawn in shards
(any batch size, frame count or process) is bit-identical to the one drawn whole.
Noise is drawn in float32 (float64 if that dtype is asked for) and then cast, so
half-precision noise is the rounding of the float32 draw.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
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
    "keyed_randn",
    "NoiseKey",
    "normal_like_source",
    "KEYED_MAX_NDIM",
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


# ============================================================================= keyed noise
# Counter-based ("keyed") Gaussian noise: the value at a global coordinate is a pure function
# of (seed, coordinate). See docs/math.md §11 and docs/priors.md.
#: Coordinates of a tensor with d <= KEYED_MAX_NDIM dims are padded with leading zeros to this
#: many axes, so ``keyed_randn((C, T, H, W))`` equals ``keyed_randn((1, C, T, H, W))[0]``.
KEYED_MAX_NDIM = 8
#: Largest global coordinate on any axis, plus one (origin + size must stay below it).
KEYED_MAX_COORD = 1 << 48
_MASK64 = (1 << 64) - 1
_MIX_M1 = 0xBF58476D1CE4E5B9  # SplitMix64 finaliser (Stafford's "Mix13") multipliers
_MIX_M2 = 0x94D049BB133111EB
_GOLDEN = 0x9E3779B97F4A7C15
_AXIS_SALT = 0xD1B54A32D192ED03
_LN2 = math.log(2.0)
_U_MAX = 1.0 - 2.0**-24  # the largest float32 below 1
_KEYED_CHUNK = 1 << 18  # pairs per chunk: work buffers of 2 MiB, few torch calls per pair


def _signed64(v: int) -> int:
    """A 64-bit pattern (Python int in [0, 2^64)) as the int64 with the same bits."""
    v &= _MASK64
    return v - (1 << 64) if v >= (1 << 63) else v


def _mix64_int(z: int) -> int:
    """SplitMix64's finaliser on a Python int (the reference the tensor version must match)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _MIX_M1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX_M2) & _MASK64
    return z ^ (z >> 31)


def _mix64_(x: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser in place on an int64 tensor (bits as uint64; wrapping products).

    ``z ^= z >>> 30; z *= M1; z ^= z >>> 27; z *= M2; z ^= z >>> 31`` with the logical shifts
    written as an arithmetic shift and a mask.
    """
    for shift, mult in ((30, _MIX_M1), (27, _MIX_M2), (31, None)):
        torch.bitwise_right_shift(x, shift, out=tmp)
        tmp.bitwise_and_((1 << (64 - shift)) - 1)
        x.bitwise_xor_(tmp)
        if mult is not None:
            x.mul_(_signed64(mult))
    return x


def _axis_salt(seed: int, axis: int) -> int:
    """Per-(seed, padded axis) salt: ``mix64(mix64(seed) + (axis+1)·S)``."""
    return _mix64_int(_mix64_int(seed) + (axis + 1) * _AXIS_SALT)


def _axis_table(seed: int, axis: int, start: int, size: int, device) -> torch.Tensor:
    """``T_axis[g] = mix64(salt(seed, axis) + (g+1)·φ)`` for g in [start, start+size), int64."""
    salt = _axis_salt(seed, axis)
    g = torch.arange(start + 1, start + size + 1, dtype=torch.int64, device=device)
    x = g.mul_(_signed64(_GOLDEN)).add_(_signed64(salt))
    return _mix64_(x, torch.empty_like(x))


def _keyed_int(seed: int, coord: Sequence[int]) -> int:
    """The 64-bit hash of one element (pure Python; the oracle for tests and docs).

    ``coord`` is the element's global coordinate padded to KEYED_MAX_NDIM axes; the last axis
    is paired: the key uses ``g_last // 2`` and both members of a pair share one hash.
    """
    key = 0
    last = len(coord) - 1
    for axis, g in enumerate(coord):
        gg = g // 2 if axis == last else g
        key += _mix64_int(_axis_salt(seed, axis) + (gg + 1) * _GOLDEN)
    return _mix64_int(key)


def _keyed_value(seed: int, coord: Sequence[int], *, float32: bool = True) -> float:
    """Float64 reference of one keyed normal (Box-Muller on the element's hash); ``u`` is
    rounded as the float32 (or float64) computation rounds it."""
    h = _keyed_int(seed, coord)
    k1 = h & 0xFFFFFFFF
    k2 = _signed64(h) >> 40  # signed 24-bit
    if float32:
        import numpy as np

        f = np.float32
        u = float(min((f(k1) + f(0.5)) * f(2.0**-32), f(_U_MAX)))
    else:
        u = min((k1 + 0.5) * 2.0**-32, _U_MAX)
    r = math.sqrt(-2.0 * math.log(u))
    theta = k2 * (2.0 * math.pi / 2.0**24)
    return r * (math.cos(theta) if coord[-1] % 2 == 0 else math.sin(theta))


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"seed must be an int in [0, 2**63 - 1], got {seed!r} ({type(seed).__name__})"
        )
    seed = int(seed)
    if not 0 <= seed <= (1 << 63) - 1:
        raise ValueError(f"seed must be an int in [0, 2**63 - 1], got {seed}")
    return seed


def _check_origin(origin, shape: tuple[int, ...]) -> tuple[int, ...]:
    if origin is None:
        origin = (0,) * len(shape)
    if isinstance(origin, torch.Tensor) or not isinstance(origin, Sequence) or isinstance(
        origin, str
    ):
        raise TypeError(
            f"origin must be None or a sequence of {len(shape)} ints (one per dim of shape "
            f"{shape}), got {origin!r}"
        )
    if len(origin) != len(shape):
        raise ValueError(
            f"origin must have one entry per dim of shape {shape} ({len(shape)}), got "
            f"{tuple(origin)} ({len(origin)} entries)"
        )
    out = []
    for i, (o, s) in enumerate(zip(origin, shape)):
        if isinstance(o, bool) or not isinstance(o, numbers.Integral):
            raise TypeError(f"origin must contain ints, got {tuple(origin)!r}")
        o = int(o)
        if o < 0 or o + s > KEYED_MAX_COORD:
            raise ValueError(
                f"origin[{i}] = {o} with size {s}: global coordinates must lie in "
                f"[0, 2**48), got [{o}, {o + s})"
            )
        out.append(o)
    return tuple(out)


def keyed_randn(
    shape, *, seed: int, origin=None, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Standard normal noise addressed by global coordinates (counter-based, stateless).

    The value at index ``i`` is a pure function of ``(seed, origin + i)``: it does not depend
    on the tensor's shape, the batch size, the frame count, the device or the process that
    draws it. So any sub-box drawn alone (``origin`` = its corner) equals that slice of the
    full tensor bit for bit; extending T or B leaves the existing entries unchanged; ranks
    that each draw their shard reproduce the tensor one process would draw.

    Scheme (docs/math.md §11), all integer arithmetic modulo 2^64:

    * coordinates ``g = origin + i`` of a d-dim tensor are padded with leading zeros to
      ``KEYED_MAX_NDIM = 8`` axes (dims align from the right, as in broadcasting: a
      ``(C, T, H, W)`` draw equals item 0 of the ``(1, C, T, H, W)`` draw);
    * the last axis is paired, ``p = g_7 // 2``; per axis ``a`` a table
      ``T_a[g] = mix64(salt(seed, a) + (g+1)·φ)`` (φ = 0x9E3779B97F4A7C15, ``salt(seed, a)
      = mix64(mix64(seed) + (a+1)·0xD1B54A32D192ED03)``, ``mix64`` = SplitMix64's finaliser);
    * the pair's hash is ``h = mix64(T_0[g_0] + ... + T_6[g_6] + T_7[p])``;
    * Box-Muller on the pair: ``u = min((h mod 2^32 + 1/2)·2^-32, 1 - 2^-24)`` (32 random
      bits, rounded to the working dtype; strictly inside (0, 1): no 0, no 1, tails to
      6.76σ), ``θ = 2π·s·2^-24`` with ``s`` the top 24 bits of ``h`` read as a signed
      integer (θ uniform on [-π, π)); even ``g_7``: ``sqrt(-2 ln u)·cos θ``, odd:
      ``sqrt(-2 ln u)·sin θ``. Computed in float32 (float64 for ``dtype=torch.float64``);
      float16 / bfloat16 are the rounding of the float32 draw.

    The per-axis tables are small; the full-size work is one add, the finaliser and the
    transform, done in cache-sized chunks.

    Args:
        shape: an int or a sequence of non-negative ints (at most 8 dims).
        seed: an int in [0, 2**63 - 1].
        origin: the global coordinate of element ``(0, ..., 0)``, one non-negative int per
            dim (default zeros); every coordinate stays below 2**48.
        dtype: a floating dtype.
        device: where to compute (default CPU); ``meta`` gives an empty meta tensor.
    """
    shape = check_shape("shape", shape)
    if len(shape) > KEYED_MAX_NDIM:
        raise ValueError(f"shape must have at most {KEYED_MAX_NDIM} dims, got {shape}")
    seed = _check_seed(seed)
    origin = _check_origin(origin, shape)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    dtype = check_floating_dtype("dtype", dtype)
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "meta" or math.prod(shape) == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    wdt = work_dtype(dtype)
    pad = KEYED_MAX_NDIM - len(shape)
    full_shape = (1,) * pad + shape
    full_origin = (0,) * pad + origin
    # row keys: the sum of the tables of every axis but the last (small broadcast adds)
    row = torch.zeros((), dtype=torch.int64, device=device)
    for axis in range(KEYED_MAX_NDIM - 1):
        t = _axis_table(seed, axis, full_origin[axis], full_shape[axis], device)
        row = row.unsqueeze(-1) + t
    row = row.reshape(-1)
    w0, w = full_origin[-1], full_shape[-1]
    p0 = w0 // 2
    npairs = (w0 + w - 1) // 2 - p0 + 1
    col = _axis_table(seed, KEYED_MAX_NDIM - 1, p0, npairs, device)
    rows = row.shape[0]
    direct = w0 % 2 == 0 and w % 2 == 0 and wdt == dtype
    buf = torch.empty((rows, npairs, 2), dtype=wdt, device=device)
    per = max(1, _KEYED_CHUNK // npairs)  # rows per chunk
    cap = min(rows, per) * min(npairs, _KEYED_CHUNK)
    h_buf = torch.empty(cap, dtype=torch.int64, device=device)
    tmp = torch.empty(cap, dtype=torch.int64, device=device)
    r_buf = torch.empty(cap, dtype=wdt, device=device)
    c_buf = torch.empty(cap, dtype=wdt, device=device)
    s_buf = torch.empty(cap, dtype=wdt, device=device)
    col_chunks = range(0, npairs, _KEYED_CHUNK) if per == 1 else (0,)
    angle = 2.0 * math.pi * 2.0**-24
    for r0 in range(0, rows, per):
        r1 = min(rows, r0 + per)
        for c0 in col_chunks:
            c1 = npairs if per > 1 else min(npairs, c0 + _KEYED_CHUNK)
            n = (r1 - r0) * (c1 - c0)
            h = h_buf[:n].view(r1 - r0, c1 - c0)
            torch.add(row[r0:r1, None], col[None, c0:c1], out=h)
            h = h.view(-1)
            t_ = tmp[:n]
            _mix64_(h, t_)
            # radius sqrt(-2 ln u), u = (h mod 2^32 + 1/2)·2^-32 in float32, below 1
            torch.bitwise_and(h, 0xFFFFFFFF, out=t_)
            rr = r_buf[:n]
            rr.copy_(t_)
            rr.add_(0.5).mul_(2.0**-32).clamp_max_(_U_MAX).log_().mul_(-2.0).sqrt_()
            # angle θ = 2π·(top 24 bits, signed)·2^-24 in [-π, π)
            torch.bitwise_right_shift(h, 40, out=t_)
            th = c_buf[:n]
            th.copy_(t_)
            th.mul_(angle)
            sn = s_buf[:n]
            torch.sin(th, out=sn)
            torch.cos(th, out=th)
            th.mul_(rr)
            sn.mul_(rr)
            # interleave the (cos, sin) pairs in one pass through a complex view
            dest = buf[r0:r1, c0:c1]  # contiguous: full rows, or one row's column range
            torch.complex(th, sn, out=torch.view_as_complex(dest.view(n, 2)))
    res = buf.view(rows, 2 * npairs)
    if direct:
        return res.view(shape)
    off = w0 % 2
    res = res[:, off : off + w].reshape(shape)
    return res if wdt == dtype else res.to(dtype)


def _tag_bytes(tag) -> bytes:
    if isinstance(tag, bool) or not isinstance(tag, (str, numbers.Integral)):
        raise TypeError(f"NoiseKey tags must be str or int, got {tag!r} ({type(tag).__name__})")
    return (b"s" + tag.encode()) if isinstance(tag, str) else (b"i" + str(int(tag)).encode())


@dataclasses.dataclass(frozen=True)
class NoiseKey:
    """Keyed noise as a value: ``seed`` and the global ``origin`` of the tensor to draw.

    Accepted by vidnoise's random functions wherever a ``generator`` is (through
    :func:`normal_like_source`): the noise drawn is ``keyed_randn(shape, seed=seed,
    origin=origin)``, so a tensor sharded across processes, or drawn at another batch size
    or frame count, stays bit-identical. ``origin=None`` means zeros for any shape.
    :meth:`derive` gives an independent key for a second draw inside one function (a shared
    frame, sub-pixels, permutations), keeping the origin.
    """

    seed: int
    origin: tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "seed", _check_seed(self.seed))
        if self.origin is not None:
            if not isinstance(self.origin, Sequence) or isinstance(self.origin, str):
                raise TypeError(f"origin must be None or a sequence of ints, got {self.origin!r}")
            origin = _check_origin(tuple(self.origin), (0,) * len(self.origin))
            if len(origin) > KEYED_MAX_NDIM:
                raise ValueError(
                    f"origin must have at most {KEYED_MAX_NDIM} entries, got {origin}"
                )
            object.__setattr__(self, "origin", origin)

    def derive(self, *tags) -> NoiseKey:
        """An independent key: ``seed' = blake2b(seed, tags) >> 1`` (63 bits), same origin."""
        h = hashlib.blake2b(digest_size=8)
        h.update(str(self.seed).encode())
        for tag in tags:
            h.update(b"|" + _tag_bytes(tag))
        return NoiseKey(int.from_bytes(h.digest(), "little") >> 1, self.origin)

    def at(self, origin) -> NoiseKey:
        """The same seed at another origin (None: zeros)."""
        return NoiseKey(self.seed, None if origin is None else tuple(origin))

    def randn(self, shape, *, dtype=None, device=None) -> torch.Tensor:
        """``keyed_randn(shape, seed=self.seed, origin=self.origin, ...)`` (dtype default:
        torch's default dtype)."""
        dtype = check_floating_dtype("dtype", dtype)
        return keyed_randn(shape, seed=self.seed, origin=self.origin, dtype=dtype, device=device)


#: What the normal draws of vidnoise accept as ``generator=``: None, a generator, one
#: generator per item of dim 0, or a :class:`NoiseKey`.
NoiseSource = GeneratorLike | NoiseKey


def normal_like_source(shape, source, *, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise of ``shape`` from ``source``: ``None``, a generator or one
    generator per item of dim 0 (:func:`randn`), or a :class:`NoiseKey` (:func:`keyed_randn`
    at the key's origin). The one dispatch the random functions of vidnoise use."""
    if isinstance(source, NoiseKey):
        return source.randn(shape, dtype=dtype, device=device)
    return randn(shape, generator=source, device=device, dtype=dtype)


def _draw(kind: str, shape, generator, device, dtype, std: float = 1.0) -> torch.Tensor:
    shape = check_shape("shape", shape)
    dtype = check_floating_dtype("dtype", dtype)
    if isinstance(generator, NoiseKey):
        if kind == "normal":
            return generator.randn(shape, dtype=dtype, device=device)
        raise TypeError(
            "generator: keyed noise (a NoiseKey) draws normal noise only; pass a "
            "torch.Generator (or one per item of dim 0) for uniform noise"
        )
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


def randn(shape, *, generator: NoiseSource = None, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise of ``shape``.

    ``generator`` may be one ``torch.Generator`` or a sequence with one per item of dim 0;
    with a sequence, item ``i`` is ``torch.randn(shape[1:], generator=generator[i])``, so it
    depends only on generator ``i``. The draw is made in float32 (float64 when
    ``dtype=torch.float64``) and cast to ``dtype``. With a :class:`NoiseKey` it is
    ``key.randn(shape)``: :func:`keyed_randn` at the key's origin (one entry per dim of
    ``shape``, or None for zeros).

    Args:
        shape: an int or a sequence of non-negative ints.
        generator: None, a generator, one generator per item of dim 0, or a NoiseKey.
        device: defaults to the generator's device (CPU without one); must match it.
        dtype: a floating dtype (default: torch's default dtype).
    """
    return _draw("normal", shape, generator, device, dtype)


def rand(shape, *, generator: GeneratorLike = None, device=None, dtype=None) -> torch.Tensor:
    """Uniform noise on [0, 1) of ``shape``, with the same generator rules as :func:`randn`.

    Half-precision values are the rounding of the float32 draw, except that a draw which
    rounds up to 1.0 (within half an ulp of 1: about 2.4e-4 of fp16 draws, 2e-3 of bf16) is
    set to the largest value below 1, so the result stays in [0, 1) in every dtype.
    A :class:`NoiseKey` is refused (``TypeError``): keyed noise is normal only.
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
    generator: NoiseSource = None,
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

    With a :class:`NoiseKey` the noise is keyed (docs/math.md §11): the block with global
    block index ``c`` (``origin = key.origin``, blocked dims counted in blocks) is made from
    the ``k`` normals at ``c·k + j`` (j < k) of ``key.derive("block_noise")``'s keyed noise,
    the block count folded into the last axis (``(*prefix, *counts[:-1], counts[-1]·k)``
    at origin ``(*o_prefix, *o_blocked[:-1] / block[:-1], o_last / block_last · k)``), and
    mixed by elementwise products summed in a fixed order (no matmul, whose rounding may
    depend on the batch shape). So any block-aligned sub-box equals that slice of the full
    draw bit for bit. The origin of every blocked dim must be a multiple of its block size
    (``ValueError`` naming ``origin`` otherwise). The 2x2 singular fast path draws its three
    planes ``X, Y, W`` as the rows ``3i, 3i+1, 3i+2`` of a ``(*lead, 3·hc, wc)`` keyed draw
    at origin ``(*o_lead, 3·o_h/2, o_w/2)``.
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
    if isinstance(generator, NoiseKey):
        return _keyed_block_noise(shape, prefix, counts, block, gamma, generator, device, dtype)
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


def _keyed_block_noise(shape, prefix, counts, block, gamma, key, device, dtype) -> torch.Tensor:
    """:func:`block_noise` from a :class:`NoiseKey` (layout in its docstring)."""
    origin = (0,) * len(shape) if key.origin is None else key.origin
    if len(origin) != len(shape):
        raise ValueError(
            f"generator=NoiseKey origin {origin} must have one entry per dim of shape {shape} "
            f"({len(shape)}), or be None"
        )
    nb, p = len(block), len(prefix)
    for d, (o, b) in enumerate(zip(origin[p:], block)):
        if o % b:
            raise ValueError(
                f"generator=NoiseKey origin {origin}: the origin of every blocked dim must be a "
                f"multiple of its block size, so that blocks sit on the global block grid; "
                f"dim {p + d} has origin {o}, block {b} (block={block})"
            )
    sub = key.derive("block_noise")
    o_pre = origin[:p]
    o_blk = tuple(o // b for o, b in zip(origin[p:], block))
    m = math.prod(block)
    device = torch.device("cpu") if device is None else torch.device(device)
    draw_dtype = work_dtype(dtype)
    if m == 1 or gamma == 0.0:
        return sub.at(origin).randn(shape, dtype=dtype, device=device)
    mix, singular = _block_basis(m, gamma)
    k = mix.shape[1]
    if singular and block[-2:] == (2, 2) and all(b == 1 for b in block[:-2]):
        hc, wc = counts[-2], counts[-1]
        lead = (*prefix, *counts[:-2])
        o_lead = (*o_pre, *o_blk[:-2])
        planes = sub.at((*o_lead, 3 * o_blk[-2], o_blk[-1])).randn(
            (*lead, 3 * hc, wc), dtype=draw_dtype, device=device
        )
        planes = planes.mul_(math.sqrt(1.0 / 3.0)).view(*lead, hc, 3, wc)
        # n[1, b] = -X + (-1)^b·√2·W = -(X - (-1)^b·√2·W) (exact: rounding is symmetric), so
        # one addcmul with X broadcast over the rows a, signs ±√2 flipped in row 1, then row 1
        # negated in place: no [X, -X] buffer
        out = torch.empty(shape, dtype=draw_dtype, device=device)
        blocks = out.view(*lead, hc, 2, wc, 2)
        torch.addcmul(planes[..., 0:1, :, None], planes[..., 1:, :, None],
                      _row_signs(draw_dtype, device), out=blocks)
        blocks[..., 1, :, :].neg_()
        return out if draw_dtype == dtype else out.to(dtype)
    w = sub.at((*o_pre, *o_blk[:-1], o_blk[-1] * k)).randn(
        (*prefix, *counts[:-1], counts[-1] * k), dtype=draw_dtype, device=device
    ).view(*prefix, *counts, k)
    cols = mix.t().to(device=device, dtype=draw_dtype)  # cols[j] = M[:, j]
    y = w[..., 0:1] * cols[0]  # y[..., i] = sum_j w[..., j]·M[i, j], summed in order j
    for j in range(1, k):
        y.add_(w[..., j : j + 1] * cols[j])
    y = y.view(*prefix, *counts, *block)
    order = list(range(p))
    for i in range(nb):
        order += [p + i, p + nb + i]
    out = y.permute(order).reshape(shape)
    return out if draw_dtype == dtype else out.to(dtype)


@functools.lru_cache(maxsize=16)
def _row_signs(dtype, device) -> torch.Tensor:
    """The (2, 1, 2) constant ``[[√2, -√2], [-√2, √2]]`` (block row a, column b)."""
    r = math.sqrt(2.0)
    return torch.tensor([[r, -r], [-r, r]], dtype=dtype, device=device).view(2, 1, 2)


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
