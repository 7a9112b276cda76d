"""Argument checks shared by every module.

Each check raises ``ValueError`` (bad value) or ``TypeError`` (bad type) with a message that
names the argument, the value received and the valid range, so bad input never fails later
with a shape error from deep inside torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise if it is not an integer in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        hi = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be >= {minimum}{hi}, got {value}")
    if maximum is not None and value > maximum:
        lo = "" if minimum is None else f">= {minimum} and "
        raise ValueError(f"{name} must be {lo}<= {maximum}, got {value}")
    return value


def check_float(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
    hint: str | None = None,
) -> float:
    """Return ``value`` as a finite float inside the given interval, or raise naming it
    (``hint``, the fix for a likely convention mistake, is appended to a range error)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    rng = range_text(low, high, low_open, high_open)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number in {rng}, got nan")
    bad = (
        (low is not None and (value < low or (low_open and value == low)))
        or (high is not None and (value > high or (high_open and value == high)))
        or (math.isinf(value) and not allow_inf)
    )
    if bad:
        raise ValueError(f"{name} must be in {rng}, got {value}{_hint(hint)}")
    return value


def _hint(hint: str | None) -> str:
    return "" if not hint else f"; {hint}"


def check_real_tensor(name: str, t: torch.Tensor) -> torch.Tensor:
    """Raise unless ``t`` holds real values: TypeError for bool and complex dtypes,
    ValueError for a meta tensor (it has a shape but no values)."""
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be a real tensor, got dtype {t.dtype}")
    if t.is_meta:
        raise ValueError(
            f"{name} is a meta tensor (no values); pass a tensor on a real device, got "
            f"shape {tuple(t.shape)} on device meta"
        )
    return t


def check_choice(name: str, value, choices: Sequence):
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_floating_dtype(name: str, dtype) -> torch.dtype:
    """Return ``dtype`` (default: torch's default dtype) if it is a floating dtype."""
    if dtype is None:
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype, got {dtype!r}")
    if dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be a floating dtype (float16, bfloat16, float32, float64), got {dtype}"
        )
    return dtype


def check_tensor(name: str, x, *, ndims: Sequence[int] | None = None, floating: bool = True):
    """Raise unless ``x`` is a tensor (of a floating dtype, with one of ``ndims`` dims)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and x.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must have a floating dtype (float16, bfloat16, float32, float64), "
            f"got {x.dtype}"
        )
    if ndims is not None and x.dim() not in ndims:
        allowed = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name} must have {allowed} dims, got shape {tuple(x.shape)}")
    return x


def check_shape(name: str, shape) -> tuple[int, ...]:
    """Normalise an int or a sequence of non-negative ints to a tuple."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, (Sequence, torch.Size)) or isinstance(shape, str):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {shape!r}")
    out = []
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"{name} must contain ints, got {shape!r}")
        if s < 0:
            raise ValueError(f"{name} must contain sizes >= 0, got {tuple(shape)}")
        out.append(int(s))
    return tuple(out)


def range_text(low, high, low_open, high_open) -> str:
    lo_b = "(" if low_open else "["
    hi_b = ")" if high_open else "]"
    return f"{lo_b}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_b}"


def float64_for(device) -> torch.dtype:
    """float64 where the device supports it (MPS does not)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def check_values(
    name: str,
    values: torch.Tensor,
    *,
    low=None,
    high=None,
    low_open=False,
    high_open=False,
    allow_inf=False,
    hint: str | None = None,
) -> None:
    """Range-check a tensor's values on the host; skipped off the CPU (it would sync).

    ``hint`` (the fix for a likely wrong-convention mistake) is appended to a range error.
    """
    if values.device.type != "cpu" or values.numel() == 0:
        return
    v = values.detach().reshape(-1).to(torch.float64)
    rng = range_text(low, high, low_open, high_open)
    nan = torch.isnan(v)
    if bool(nan.any()):
        i = int(nan.nonzero()[0, 0])
        raise ValueError(f"{name} must be in {rng}, got nan (at flat index {i})")
    bad = torch.zeros_like(v, dtype=torch.bool)
    if low is not None:
        bad |= (v <= low) if low_open else (v < low)
    if high is not None:
        bad |= (v >= high) if high_open else (v > high)
    if not allow_inf:
        bad |= torch.isinf(v)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name} must be in {rng}, got {float(v[i])} (at flat index {i}){_hint(hint)}"
        )


def values64(name: str, value, **bounds):
    """Checked float64 view of a float or a tensor: returns ``(v, out_dtype)``.

    ``bounds`` are :func:`check_values`' keywords (``low``, ``high``, ``low_open``,
    ``high_open``, ``allow_inf``, ``hint``). ``v`` is a Python float (``out_dtype`` None) or a
    float64 tensor (``out_dtype`` the dtype to return: the input's floating dtype, float32 for
    integer tensors).
    """
    if isinstance(value, torch.Tensor):
        check_real_tensor(name, value)
        check_values(name, value, **bounds)
        out_dtype = value.dtype if value.is_floating_point() else torch.float32
        return value.to(float64_for(value.device)), out_dtype
    return check_float(name, value, **bounds), None


# ----------------------------------------------------------------------------- shared rules
LAYOUTS = ("BCTHW", "BTCHW")


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The one working-dtype rule: arithmetic on half-precision (float16, bfloat16) tensors
    is done and accumulated in float32; float32 and float64 stay as they are."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_bool(name: str, value) -> bool:
    """Raise unless ``value`` is exactly True or False (not 0/1, not a tensor)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_callable(name: str, fn, *, optional: bool = False):
    """Raise unless ``fn`` is callable (or None when ``optional``)."""
    if fn is None and optional:
        return None
    if not callable(fn):
        what = "a callable or None" if optional else "a callable"
        raise TypeError(f"{name} must be {what}, got {type(fn).__name__}")
    return fn


def frame_axis(layout: str) -> int:
    """The frame axis of a 5-D video tensor in ``layout`` ("BCTHW" -> 2, "BTCHW" -> 1)."""
    check_choice("layout", layout, LAYOUTS)
    return 2 if layout == "BCTHW" else 1


def as_sigma(
    name: str,
    sigma,
    shape,
    device,
    *,
    layout: str | None = None,
    low=0.0,
    high=None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
    hint: str | None = None,
    scalar: str = "a float",
):
    """The one σ-to-batch rule: ``sigma`` as a checked Python float, or a float64 tensor
    broadcastable against data of ``shape``.

    Accepted: a Python real; a 0-d tensor; a (B,) tensor (one level per sample, reshaped to
    (B, 1, ..., 1)); and, when ``layout`` is given and the data is 5-D, a (B, T) tensor (one
    level per frame: (B, 1, T, 1, 1) for BCTHW, (B, T, 1, 1, 1) for BTCHW). Values are
    range-checked on the host for CPU tensors only (no device sync); bool and complex tensors
    raise TypeError, meta tensors ValueError. ``hint`` is appended to a range error.
    """
    shape = tuple(shape)
    if layout is not None:
        check_choice("layout", layout, LAYOUTS)
    rng = dict(low=low, high=high, low_open=low_open, high_open=high_open, allow_inf=allow_inf,
               hint=hint)
    if not isinstance(sigma, torch.Tensor):
        return check_float(name, sigma, **rng)
    check_real_tensor(name, sigma)
    batch = shape[0] if shape else None
    per_frame = layout is not None and len(shape) == 5
    frames = shape[frame_axis(layout)] if per_frame else None
    ok = sigma.dim() == 0 or (sigma.dim() == 1 and sigma.shape[0] == batch)
    ok = ok or (per_frame and sigma.dim() == 2 and tuple(sigma.shape) == (batch, frames))
    if not ok:
        allowed = f"{scalar}, a 0-d tensor or a tensor of shape (B,) = ({batch},)"
        if per_frame:
            allowed += f" or (B, T) = ({batch}, {frames}) for layout {layout}"
        raise ValueError(
            f"{name} must be {allowed} matching the data {shape}, got shape "
            f"{tuple(sigma.shape)}"
        )
    check_values(name, sigma, **rng)
    s = sigma.to(device=device, dtype=float64_for(device))
    if s.dim() == 1:
        s = s.reshape(s.shape[0], *([1] * (len(shape) - 1)))
    elif s.dim() == 2:
        view = [s.shape[0], 1, 1, 1, 1]
        view[frame_axis(layout)] = s.shape[1]
        s = s.reshape(view)
    return s


def level_out(sigma, s, batch: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The per-sample record of a level given to :func:`as_sigma`: (B,), or (B, T) for a
    per-frame ``sigma``, in the working dtype of ``dtype`` (a copy, never a view of ``sigma``).

    ``sigma`` is the caller's argument and ``s`` what :func:`as_sigma` returned for it.
    """
    wd = work_dtype(dtype)
    if isinstance(s, float):
        return torch.full((batch,), s, dtype=wd, device=device)
    out = s.to(dtype=wd).reshape(-1)
    if sigma.dim() == 2:
        return out.reshape(sigma.shape).clone()
    return out.expand(batch).clone()


def safe_div(p, q):
    """``p / q`` for Python floats and tensors alike: a float ``p / 0`` is ``±inf`` (``nan``
    for ``0 / 0``), as tensor division gives, instead of raising ZeroDivisionError."""
    if isinstance(q, float) and q == 1.0:  # no tensor op for a unit divisor
        return p
    if isinstance(p, float) and isinstance(q, float):
        if q == 0.0:
            return math.copysign(math.inf, p) if p != 0.0 else math.nan
        return p / q
    return p / q
