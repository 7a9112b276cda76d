"""Autoregressive rollout: generate frames one at a time from a sliding window of context."""

from __future__ import annotations

import torch

from vidnoise._checks import (
    check_bool,
    check_callable,
    check_float,
    check_int,
    check_tensor,
    work_dtype,
)
from vidnoise.noise import as_generators, randn
from vidnoise.samplers._common import progress_range

__all__ = ["rollout"]


def rollout(
    sample_next,
    context,
    n_frames,
    *,
    cond_noise=0.0,
    accumulate_cond_noise=False,
    generator=None,
    progress=False,
    grad=False,
):
    """Generate ``n_frames`` frames autoregressively.

    The window holds the last K frames (K = ``context.shape[1]``). For each new frame:
    ``c = window + cond_noise·ε`` (fresh ε, once per generated frame), ``frame =
    sample_next(c)``, then the window slides by one (drops its oldest frame, appends the new
    clean frame). Noise is drawn through :func:`vidnoise.noise.randn` with ``generator``.

    ``accumulate_cond_noise=True`` reproduces DIAMOND's CS:GO world model (its ``csgo``
    branch: ``s_cond = 0.005`` in the world-model sampler configs; its Atari models never
    noise the previous frames), whose sampler re-noises the conditioning frames inside its
    denoising-step loop (``docs/math.md §6``): at step k (0-based) they carry
    ``k + 1`` independent draws, noise std ``cond_noise·sqrt(k + 1)``, while the model is told
    ``cond_noise``. ``sample_next`` is then called as ``sample_next(c, renoise=renoise)``
    where ``c = renoise(0)`` and ``renoise(k)`` returns the frames of step k (the draws are
    nested: ``renoise(k+1) - renoise(k)`` is one fresh ``cond_noise·ε``). Without it the
    conditioning noise has std ``cond_noise`` at every step, matching what the model is told.

    Args:
        sample_next: ``sample_next(context_frames) -> frame``, context (B, K, C, H, W) in
            ``context``'s dtype, frame (B, C, H, W).
        context: (B, K, C, H, W) clean starting frames, K >= 1.
        n_frames: number of frames to generate, >= 1.
        cond_noise: σ of the conditioning-frame noise (x + σ·ε), >= 0.
        generator: one ``torch.Generator`` or one per item of dim 0.
        progress: tqdm bar over frames (nothing, with a warning, without tqdm).
            (Half-precision frames are noised in float32 and rounded once.)
        grad: keep the autograd graph (through ``sample_next`` and the window). Default
            False: the rollout runs under ``torch.no_grad()``, like every sampler.

    Returns:
        (B, n_frames, C, H, W): the generated frames only, in ``context``'s dtype.
    """
    check_callable("sample_next", sample_next)
    check_tensor("context", context, ndims=(5,))
    if context.shape[1] < 1:
        raise ValueError(f"context must hold K >= 1 frames on dim 1, got shape "
                         f"{tuple(context.shape)}")
    n_frames = check_int("n_frames", n_frames, minimum=1)
    cond_noise = check_float("cond_noise", cond_noise, low=0.0)
    check_bool("accumulate_cond_noise", accumulate_cond_noise)
    check_bool("progress", progress)
    check_bool("grad", grad)
    as_generators(generator, context.shape[0])
    with torch.set_grad_enabled(grad):
        return _loop(sample_next, context, n_frames, cond_noise, accumulate_cond_noise,
                     generator, progress)


def _loop(sample_next, context, n_frames, cond_noise, accumulate_cond_noise, generator,
          progress):
    b, k = context.shape[:2]
    frame_shape = (b, *context.shape[2:])

    dtype, wdt = context.dtype, work_dtype(context.dtype)

    def noised(frames, base=None):  # c = x + σ_c·ε, kept in float32 for half precision
        eps = randn(frames.shape, generator=generator, device=frames.device, dtype=wdt)
        return eps.mul_(cond_noise).add_(frames if base is None else base)

    window = context
    out = []
    for _ in progress_range(n_frames, progress, "rollout"):
        if accumulate_cond_noise:
            steps = [noised(window) if cond_noise > 0 else window]

            def renoise(step, _steps=steps, _window=window):
                step = check_int("renoise step", step, minimum=0)
                while len(_steps) <= step:  # nested draws: one more σ_c·ε per step
                    _steps.append(noised(_window, _steps[-1]) if cond_noise > 0 else _window)
                return _steps[step].to(dtype)

            frame = sample_next(steps[0].to(dtype), renoise=renoise)
        else:
            frame = sample_next(noised(window).to(dtype) if cond_noise > 0 else window)
        if not isinstance(frame, torch.Tensor) or tuple(frame.shape) != frame_shape:
            raise ValueError(
                f"sample_next must return one frame of shape {frame_shape} (B, C, H, W), got "
                f"{tuple(frame.shape) if isinstance(frame, torch.Tensor) else type(frame)}"
            )
        if frame.device != context.device:
            raise ValueError(
                f"sample_next must return a frame on the context's device {context.device}, "
                f"got one on {frame.device}"
            )
        frame = frame.to(context.dtype)
        out.append(frame)
        window = torch.cat([window[:, 1:], frame[:, None]], dim=1) if k > 1 else frame[:, None]
    return torch.stack(out, dim=1)
