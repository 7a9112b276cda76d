"""Private helpers of the samplers: grid reading, input and output checks, progress bar.

Everything here runs before a sampler's loop (on the host, on Python floats) or is a thin
wrapper that adds no tensor work inside it, so the loops stay free of host syncs.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch

from vidnoise._checks import check_tensor, work_dtype

__all__ = [
    "check_finite", "check_state", "model_output", "progress_range", "read_grid", "sigma_batch",
    "to_device",
]


def read_grid(
    name: str,
    sigmas,
    *,
    high: float | None = None,
    end: float | None = 0.0,
) -> list[float]:
    """Read a sigma grid once as Python floats and check it.

    ``sigmas`` is a 1-D tensor or a sequence of real numbers (0-d real tensors included, as
    ``list(tensor)`` gives) with at least two values,
    strictly decreasing, finite and >= 0 (and <= ``high`` when given), ending at ``end``
    when given. A tensor is copied to the host here, once, before any loop: pass the grid as a
    CPU tensor or a list to avoid that single device sync on an accelerator.
    """
    if isinstance(sigmas, torch.Tensor):
        if sigmas.dim() != 1:
            raise ValueError(
                f"{name} must be a 1-D tensor or a sequence of floats, got shape "
                f"{tuple(sigmas.shape)}"
            )
        values = [float(v) for v in sigmas.detach().to("cpu", torch.float64).tolist()]
    elif isinstance(sigmas, Sequence) and not isinstance(sigmas, str):
        values = list(sigmas)
        if not all(type(v) is float for v in values):  # fast path: a list of floats
            for v in values:
                if isinstance(v, torch.Tensor) and v.dim() == 0 and not (
                    v.dtype == torch.bool or v.is_complex() or v.is_meta
                ):
                    continue  # list(tensor) gives 0-d tensors: read once, here
                if isinstance(v, bool) or not isinstance(v, numbers.Real):
                    raise TypeError(f"{name} must contain real numbers, got {v!r}")
            values = [float(v) for v in values]
    else:
        raise TypeError(
            f"{name} must be a 1-D tensor or a sequence of floats, got {type(sigmas).__name__}"
        )
    if len(values) < 2:
        raise ValueError(
            f"{name} must have at least 2 values (a start and an end), got {len(values)}"
        )
    rng = f"[0, {high}]" if high is not None else "[0, inf)"
    for i, v in enumerate(values):
        if not math.isfinite(v) or v < 0.0 or (high is not None and v > high):
            hint = ""
            if high == 1.0 and all(math.isfinite(u) and u >= 0.0 for u in values):
                edm = (
                    f"EDM noise levels (x = x0 + σ·ε, e.g. a Karras grid): sample them with "
                    f"sample_edm and a denoiser, or convert them for a flow model with "
                    f"vidnoise.conventions.edm_sigma_to_flow({name}) (σ/(1 + σ))"
                )
                if all(u <= 1000.0 for u in values):
                    hint = (
                        f"; {name} looks like timesteps on a 0..1000 scale: convert them with "
                        f"vidnoise.conventions.timestep_to_sigma({name}) (σ = t/1000); or "
                        f"like {edm}"
                    )
                else:
                    hint = f"; {name} looks like {edm}"
            raise ValueError(
                f"{name} must contain finite values in {rng}, got {name}[{i}] = {v}{hint}"
            )
    for i in range(len(values) - 1):
        if not values[i + 1] < values[i]:
            raise ValueError(
                f"{name} must be strictly decreasing, got {name}[{i}] = {values[i]} and "
                f"{name}[{i + 1}] = {values[i + 1]}"
            )
    if end is not None and values[-1] != end:
        raise ValueError(f"{name} must end at {end}, got {name}[-1] = {values[-1]}")
    return values


def sigma_batch(values: Sequence[float], batch: int, dtype, device) -> torch.Tensor:
    """All per-step sigma batches made once: row ``i`` is ``values[i]`` repeated ``batch``
    times, so the loop only takes a row (a contiguous view: no allocation, no sync)."""
    col = to_device(list(values), dtype, device)
    return col[:, None].repeat(1, batch)


def to_device(values, dtype, device) -> torch.Tensor:
    """A host list as a tensor on ``device`` without a host sync: on CUDA the copy goes
    through pinned memory with ``non_blocking=True`` (a plain copy from pageable memory
    would synchronise the stream)."""
    device = torch.device(device)
    host = torch.tensor(values, dtype=dtype)
    if device.type == "cpu":
        return host
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _tqdm(enabled: bool):
    """The tqdm class when ``enabled`` and tqdm is installed; else None (with a single
    ``UserWarning`` when the bar was asked for but tqdm is missing)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn(
            "progress=True needs tqdm (pip install tqdm); running without a progress bar",
            stacklevel=4,
        )
        return None
    return tqdm


def progress_range(n: int, progress: bool, desc: str):
    """``range(n)``, wrapped in a tqdm bar when ``progress`` is true and tqdm is installed.

    Without tqdm a single ``UserWarning`` says the bar is unavailable and the loop runs
    unchanged.
    """
    tqdm = _tqdm(progress)
    return range(n) if tqdm is None else tqdm(range(n), desc=desc, leave=False)


def progress_bar(total: int, progress: bool, desc: str):
    """A manually updated tqdm bar over ``total`` steps, or None (see :func:`progress_range`)."""
    tqdm = _tqdm(progress)
    return None if tqdm is None else tqdm(total=total, desc=desc, leave=False)


def check_state(name: str, x) -> torch.dtype:
    """Check a sampler's start tensor and return its working dtype (``_checks.work_dtype``).

    ``x`` must be a real floating tensor with a batch dim 0. bool, integer and complex
    tensors raise naming ``name``; so does a CPU tensor holding NaN or inf (see
    :func:`check_finite`). A tensor on the meta device is accepted (the whole loop then runs
    on meta: a cheap proof that it never reads a tensor value on the host).
    """
    check_tensor(name, x)
    if x.dim() < 1:
        raise ValueError(f"{name} must have a batch dim (dim 0), got a 0-d tensor")
    check_finite(name, x)
    return work_dtype(x.dtype)


def check_finite(name: str, x: torch.Tensor) -> None:
    """Refuse a CPU tensor holding NaN or inf, with their count (once, before a loop).

    Off the CPU (and under ``torch.compile``) the check is skipped: it reads values on the
    host, which would be a device sync. A model output inside the loop is never checked:
    NaN or inf from the model propagates to the result, it is never replaced.
    """
    if x.device.type != "cpu" or x.numel() == 0 or torch.compiler.is_compiling():
        return
    if math.isfinite(float(x.detach().sum())):  # one cheap pass (about 25x cheaper
        return  # than isfinite().all()); NaN or inf in x makes the sum non-finite
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = x.numel() - int(finite.sum())
        raise ValueError(
            f"{name} must hold finite values, got {bad} of {x.numel()} values that are nan "
            f"or inf (shape {tuple(x.shape)})"
        )


def model_output(name: str, out, like: torch.Tensor) -> torch.Tensor:
    """Check a model output against the state ``like`` and return it in ``like``'s dtype.

    Type, shape and device are host metadata (no sync). A tuple or a diffusers output
    object is the usual ``return_dict`` mistake: the message says to pass
    ``return_dict=False`` and take element 0. Another dtype is cast to the state's (so a
    float64 model output never turns a float32 sample into float64); another device raises
    (a meta output would otherwise leave the state unchanged without a word).
    """
    if not isinstance(out, torch.Tensor) or out.shape != like.shape:
        bad_output(name, out, like)
    if out.device != like.device:
        raise ValueError(
            f"{name} must return a tensor on the input's device {like.device}, got one on "
            f"{out.device}"
        )
    return out if out.dtype == like.dtype else out.to(like.dtype)


def bad_output(name: str, out, like: torch.Tensor):
    if isinstance(out, tuple) or (
        not isinstance(out, torch.Tensor) and hasattr(out, "to_tuple")
    ):
        raise TypeError(
            f"{name} must return a torch.Tensor, got a {type(out).__name__} (a diffusers "
            "model returns a tuple or an output object): call it with return_dict=False and "
            "return element [0], e.g. lambda x, s: net(x, s, return_dict=False)[0]"
        )
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    raise ValueError(
        f"{name} must return a tensor of the input's shape {tuple(like.shape)}, got "
        f"{tuple(out.shape)}"
    )
