"""Conditioning noise: image-condition augmentation, history and previous-frame noise.

Three mechanisms put noise on what a video model is *conditioned on* (not on what it
generates):

* **Image-condition augmentation** (CogVideoX image-to-video), :class:`ImageConditionAugment`.
  Training: ``noisy = image + σ·ε`` with ``log σ ~ N(-3.0, 0.5)`` (median σ = e⁻³ ≈ 0.0498),
  encode, zero the whole condition with probability 0.05, pad with zero frames to the clip
  length; the result is concatenated with the noisy video latents on the channel axis
  (:func:`concat_condition`). Inference (:func:`condition`) uses the clean image.
  σ is a noise standard deviation (VE / EDM convention: ``x = x0 + σ·ε``).

  *The known bug*: an early CogVideoX training script encoded ``σ·ε`` alone, so the model
  never saw the image. Here the noise is only ever *added to the image* inside
  :meth:`ImageConditionAugment.augment`; no function returns the noise term on its own, so
  that mistake cannot be written with this API.

* **History corruption** (Pyramid-Flow), :func:`corrupt_history`:
  ``σc·ε + (1-σc)·frames`` with ``σc ~ U(0, 1/3)`` per sample (flow convention, σc is a
  noise fraction).

* **Previous-frame noise** (DIAMOND's CS:GO world model), :func:`augment_previous_frames`:
  ``noised = frames + σ_off·η + σ·ε`` (EDM σ = noise std), with a fixed σ at inference and
  a sampled σ in training, and the level told to the network ``c_noise_cond = ln(σ)/4``.
  Only DIAMOND's CS:GO branch noises the previous frames (``noise_previous_obs``, and
  ``s_cond = 0.005`` in its world-model sampler configs); its Atari models never do.

The formulas and their sources are in ``docs/math.md §6``.

Randomness goes through :func:`vidnoise.noise.randn` / :func:`vidnoise.noise.rand`:
``generator`` is one ``torch.Generator`` or a sequence with one per sample, and with a
sequence sample ``i`` depends only on generator ``i``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vidnoise._checks import (
    LAYOUTS,
    check_bool,
    check_callable,
    check_choice,
    check_float,
    check_int,
    check_tensor,
    check_values,
    frame_axis,
    work_dtype,
)
from vidnoise.noise import GeneratorLike, as_generators, rand, randn
from vidnoise.sigma_samplers import lognormal

__all__ = [
    "LAYOUTS",
    "ConditionBatch",
    "CorruptedHistory",
    "ImageConditionAugment",
    "PreviousFrames",
    "augment_previous_frames",
    "concat_condition",
    "condition",
    "corrupt_history",
]

_SPACES = ("pixel", "latent")


# ----------------------------------------------------------------------------- helpers
def _axes(layout: str) -> tuple[int, int]:
    """(channel axis, frame axis) of ``layout``."""
    t_axis = frame_axis(layout)
    return 3 - t_axis, t_axis


def _check_float_tensor(name: str, x) -> torch.Tensor:
    if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
        raise ValueError(
            f"{name} must have a floating dtype (float16, bfloat16, float32, float64), got "
            f"torch.uint8: convert a [0, 255] image to [-1, 1] with {name}.float() / 127.5 - 1"
        )
    return check_tensor(name, x)


#: Largest |value| accepted in a pixel-space image (nominal range [-1, 1]; resampling
#: overshoot stays far below this). A [0, 255] image exceeds it at its first bright pixel.
_PIXEL_BOUND = 2.0


def _check_pixel_range(name: str, image: torch.Tensor) -> None:
    """Refuse a float pixel image on a [0, 255] scale (CPU only: it reads values)."""
    if image.device.type != "cpu" or image.numel() == 0:
        return
    top = float(image.detach().abs().max())  # nan if any value is nan, inf if any is inf
    if not math.isfinite(top):
        bad = image.numel() - int(torch.isfinite(image).sum())
        raise ValueError(
            f"{name} must hold finite values, got {bad} of {image.numel()} values that are "
            f"nan or inf"
        )
    if top > _PIXEL_BOUND:
        raise ValueError(
            f"{name} must be a pixel image in [-1, 1] with space='pixel' (the σ ≈ 0.05 noise "
            f"is relative to that range), got values up to {top:g}: a [0, 255] image is "
            f"converted with {name} / 127.5 - 1 (a [0, 1] image with 2 * {name} - 1); "
            f"pass space='latent' if {name} is an image latent"
        )


def _check_video(name: str, x, layout: str, *, one_frame: bool = False) -> torch.Tensor:
    """Check that ``x`` is a 5-D tensor in ``layout`` (with one frame if ``one_frame``)."""
    _check_float_tensor(name, x)
    _, t_axis = _axes(layout)
    dims = "(B, C, T, H, W)" if layout == "BCTHW" else "(B, T, C, H, W)"
    if x.dim() != 5:
        hint = ""
        if x.dim() == 4:
            hint = f"; add the frame axis with {name}.unsqueeze({t_axis})"
        raise ValueError(
            f"{name} must have a frame axis: 5 dims {dims} for layout={layout!r}, "
            f"got shape {tuple(x.shape)}{hint}"
        )
    if one_frame and x.shape[t_axis] != 1:
        other = LAYOUTS[1 - LAYOUTS.index(layout)]
        _, other_t = _axes(other)
        hint = ""
        if x.shape[other_t] == 1:
            hint = f"; the shape reads as layout {other!r}: does layout match the tensor?"
        raise ValueError(
            f"{name} must hold one frame on the frame axis (dim {t_axis}) of "
            f"layout={layout!r}, got shape {tuple(x.shape)} with {x.shape[t_axis]} there"
            f"{hint}"
        )
    return x


def _pad_frames(latents: torch.Tensor, num_frames: int, layout: str) -> torch.Tensor:
    """Append zero frames along the frame axis so that there are ``num_frames`` (cond first)."""
    _, t_axis = _axes(layout)
    have = latents.shape[t_axis]
    if have == num_frames:
        return latents
    pad_shape = list(latents.shape)
    pad_shape[t_axis] = num_frames - have
    return torch.cat([latents, latents.new_zeros(pad_shape)], dim=t_axis)


def _encode(encode, noisy: torch.Tensor, num_frames: int, layout: str) -> torch.Tensor:
    """Run ``encode`` once on ``noisy`` and check what it returns."""
    out = encode(noisy)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"encode must return a torch.Tensor, got {type(out).__name__}")
    _check_video("encode(image)", out, layout)
    _, t_axis = _axes(layout)
    if out.shape[0] != noisy.shape[0]:
        raise ValueError(
            f"encode must keep the batch size: got shape {tuple(out.shape)} for an input of "
            f"shape {tuple(noisy.shape)}"
        )
    if out.device != noisy.device:
        raise ValueError(
            f"encode must return a tensor on the image's device {noisy.device}, got one on "
            f"{out.device}"
        )
    if not 1 <= out.shape[t_axis] <= num_frames:
        raise ValueError(
            f"encode(image) has {out.shape[t_axis]} frames on the frame axis (dim {t_axis}) of "
            f"layout={layout!r} (shape {tuple(out.shape)}); it must have between 1 and "
            f"num_frames={num_frames}"
        )
    return out


def _condition_frames(name: str, latents: torch.Tensor, num_frames: int, layout: str):
    _, t_axis = _axes(layout)
    if latents.shape[t_axis] > num_frames:
        raise ValueError(
            f"num_frames must be >= the {latents.shape[t_axis]} condition frame(s) of {name} "
            f"(shape {tuple(latents.shape)}, layout={layout!r}), got {num_frames}"
        )


def _same_device(name: str, t: torch.Tensor, device: torch.device) -> None:
    """A σ tensor on the meta device has no values to apply: refuse it unless the frames are
    on meta too (a CPU σ for frames on another device is copied there, as before)."""
    if t.is_meta != (device.type == "meta"):
        raise ValueError(
            f"{name} is on {t.device} but frames are on {device}: pass σ on the frames' "
            f"device, as a CPU tensor or as a float"
        )


# ----------------------------------------------------------------------------- image condition
@dataclass(frozen=True)
class ConditionBatch:
    """The image condition of one training batch.

    Attributes:
        latents: the condition, padded with zero frames to ``num_frames`` (condition frames
            first), in the call's layout; ready for :func:`concat_condition`.
        sigmas: (B,) noise std σ drawn for each sample (float32, float64 for float64 input).
            A dropped sample keeps the σ it drew.
        dropped: (B,) bool, True where the whole condition was zeroed (image dropout).
    """

    latents: torch.Tensor
    sigmas: torch.Tensor
    dropped: torch.Tensor


@dataclass(frozen=True)
class ImageConditionAugment:
    """Noise augmentation of an image condition (CogVideoX image-to-video).

    Training, per call of :meth:`augment` (VE / EDM convention, σ = noise std)::

        log σ ~ N(log_sigma_mean, log_sigma_std²)   # per sample, or one per batch
        noisy  = image + σ·ε                         # ε ~ N(0, I); never σ·ε alone
        cond   = encode(noisy)                       # space="pixel" with an encoder
        cond   = 0 with probability `dropout`        # whole sample (image dropout)
        cond   = [cond, 0, ..., 0]                   # zero frames up to num_frames

    The defaults are CogVideoX's: median σ = exp(-3.0) ≈ 0.0498 on a [-1, 1] pixel image,
    5 % image dropout. Inference (:meth:`condition`) encodes the clean image and pads it,
    with no noise and no dropout.

    Args:
        log_sigma_mean: mean of log σ (finite).
        log_sigma_std: standard deviation of log σ, >= 0 (0 gives a fixed σ).
        per_sample: one σ per sample (True) or one σ for the whole batch (False, as in the
            first CogVideoX scripts).
        dropout: probability in [0, 1] of zeroing a sample's whole condition.
        space: "pixel" (noise added before the optional ``encode``) or "latent" (the image
            is already a latent: noise added to it and no ``encode`` allowed).
    """

    log_sigma_mean: float = -3.0
    log_sigma_std: float = 0.5
    per_sample: bool = True
    dropout: float = 0.05
    space: str = "pixel"

    def __post_init__(self):
        mean = check_float("log_sigma_mean", self.log_sigma_mean)
        if mean > 0:
            raise ValueError(
                f"log_sigma_mean is the mean of log σ (CogVideoX: -3.0, median σ = e^-3 ≈ "
                f"0.05), got {mean:g}, a median σ of {math.exp(mean):.3g} on a [-1, 1] "
                f"image: if {mean:g} is σ itself, pass log_sigma_mean=math.log({mean:g}) = "
                f"{math.log(mean):.4g}"
            )
        check_float("log_sigma_std", self.log_sigma_std, low=0.0)
        check_float("dropout", self.dropout, low=0.0, high=1.0)
        check_bool("per_sample", self.per_sample)
        check_choice("space", self.space, _SPACES)

    def _check_encode(self, encode):
        check_callable("encode", encode, optional=True)
        if encode is not None and self.space == "latent":
            raise ValueError(
                "encode must be None with space='latent' (the image is already a latent and "
                "the noise is added to it); use space='pixel' to add noise before encoding"
            )

    def augment(
        self,
        image: torch.Tensor,
        num_frames: int,
        encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        layout: str = "BCTHW",
        generator: GeneratorLike = None,
    ) -> ConditionBatch:
        """Noised, encoded, dropped-out and padded image condition for training.

        ``latents = pad(drop(encode(image + σ·ε)))`` (see the class docstring). ``encode`` is
        called exactly once, on the noisy image (all samples, dropped ones included), never
        on padding; it must return a 5-D tensor in the same layout with the same batch size.
        Arithmetic is done in float32 for half-precision input and the result cast back.

        Random draws, in this order from ``generator``: log σ (B values, or one with
        ``per_sample=False``), ε (the image's shape), the dropout uniforms (B values). With a
        sequence of generators (one per sample, ``per_sample=True`` only), sample ``i``
        depends only on generator ``i``. The dropout uniforms are drawn even when
        ``dropout`` is 0 or 1, so the generator advances the same way for every setting.

        Same signature as :meth:`condition` (plus ``generator``): ``image``, ``num_frames``
        and ``encode`` positional or keyword, ``layout`` and ``generator`` keyword-only.

        Args:
            image: (B, C, 1, H, W) for layout "BCTHW" or (B, 1, C, H, W) for "BTCHW";
                a pixel image in [-1, 1] (space="pixel") or an image latent (space="latent").
                A CPU pixel image with values beyond ±2 (a [0, 255] image) raises.
            num_frames: frames of the returned condition (the video's latent frame count),
                >= the number of condition frames.
            encode: pixel-to-latent encoder (VAE encode and scale), or None.
            layout: "BCTHW" or "BTCHW", for the image, ``encode``'s output and the result.
            generator: None, one ``torch.Generator``, or one per sample.
        """
        self._check_encode(encode)
        _check_video("image", image, layout, one_frame=True)
        if self.space == "pixel":
            _check_pixel_range("image", image)
        num_frames = check_int("num_frames", num_frames, minimum=1)
        _condition_frames("image", image, num_frames, layout)
        b = image.shape[0]
        gens = as_generators(generator, b)
        if isinstance(gens, list) and not self.per_sample:
            raise ValueError(
                "generator: per_sample=False draws one σ for the whole batch, which cannot "
                "depend on one generator per sample; pass one torch.Generator (or None)"
            )
        dev = image.device
        work = work_dtype(image.dtype)

        # log σ ~ N(mean, std²): one per sample, or one shared by the batch
        z = randn((b,) if self.per_sample else (1,), generator=gens, device=dev, dtype=work)
        sigmas = torch.exp(z * self.log_sigma_std + self.log_sigma_mean).expand(b).contiguous()
        # noisy = image + σ·ε  (the image is always there: the CogVideoX fix)
        eps = randn(image.shape, generator=gens, device=dev, dtype=work)
        noisy = torch.addcmul(image.to(work), sigmas.view(b, 1, 1, 1, 1), eps)
        noisy = noisy.to(image.dtype)
        # whole-sample dropout, decided before encoding so the draws never depend on encode
        dropped = rand((b,), generator=gens, device=dev, dtype=work) < self.dropout

        latents = noisy if encode is None else _encode(encode, noisy, num_frames, layout)
        latents = latents.masked_fill(dropped.to(latents.device).view(b, 1, 1, 1, 1), 0)
        latents = _pad_frames(latents, num_frames, layout)
        return ConditionBatch(latents=latents, sigmas=sigmas, dropped=dropped)

    def condition(
        self,
        image: torch.Tensor,
        num_frames: int,
        encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        layout: str = "BCTHW",
    ) -> torch.Tensor:
        """Inference condition: :func:`condition` (clean image, no noise, no dropout)."""
        self._check_encode(encode)
        return condition(image, num_frames, encode, layout=layout)


def condition(
    image: torch.Tensor,
    num_frames: int,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    layout: str = "BCTHW",
) -> torch.Tensor:
    """Inference image condition: ``pad(encode(image))``, no noise and no dropout.

    CogVideoX conditions on the clean image latent at inference. ``encode`` (if given) is
    called once, on the image itself; the result is padded with zero frames along the frame
    axis to ``num_frames`` (condition first).

    Args:
        image: (B, C, 1, H, W) for layout "BCTHW" or (B, 1, C, H, W) for "BTCHW".
        num_frames: frames of the returned condition, >= the condition's frames.
        encode: pixel-to-latent encoder, or None (image already in the model's space).
        layout: "BCTHW" or "BTCHW".
    """
    check_callable("encode", encode, optional=True)
    _check_video("image", image, layout, one_frame=True)
    num_frames = check_int("num_frames", num_frames, minimum=1)
    _condition_frames("image", image, num_frames, layout)
    latents = image if encode is None else _encode(encode, image, num_frames, layout)
    return _pad_frames(latents, num_frames, layout)


def concat_condition(
    noisy_latents: torch.Tensor, condition: torch.Tensor, *, layout: str
) -> torch.Tensor:
    """Concatenate the condition to the noisy video latents on the channel axis.

    ``out = cat([noisy_latents, condition], channel axis)`` (dim 1 for "BCTHW", dim 2 for
    "BTCHW"): the CogVideoX I2V transformer input. Batch, frame and spatial sizes must agree;
    the condition is cast to ``noisy_latents.dtype``.

    Raises ``ValueError`` naming both shapes when any non-channel size differs.
    """
    c_axis, _ = _axes(layout)
    _check_video("noisy_latents", noisy_latents, layout)
    _check_video("condition", condition, layout)
    a, c = tuple(noisy_latents.shape), tuple(condition.shape)
    if a[0] != c[0]:
        raise ValueError(
            f"noisy_latents and condition must have the same batch size (dim 0): "
            f"noisy_latents has shape {a}, condition has shape {c}"
        )
    rest = [d for d in range(5) if d not in (0, c_axis)]
    if any(a[d] != c[d] for d in rest):
        raise ValueError(
            f"noisy_latents and condition must agree on every dim but the channel axis "
            f"(dim {c_axis} of layout={layout!r}): noisy_latents has shape {a}, condition "
            f"has shape {c}"
        )
    if noisy_latents.device != condition.device:
        raise ValueError(
            f"noisy_latents and condition must be on one device, got "
            f"{noisy_latents.device} and {condition.device}"
        )
    return torch.cat([noisy_latents, condition.to(noisy_latents.dtype)], dim=c_axis)


# ----------------------------------------------------------------------------- previous frames
@dataclass(frozen=True)
class PreviousFrames:
    """Result of :func:`augment_previous_frames`.

    Attributes:
        noised: the noised conditioning frames, same shape and dtype as the input.
        sigma: (B,) noise std σ that was applied (float32, float64 for float64 input).
        c_noise_cond: (B,) ``ln(σ)/4``, the level to give the network.
    """

    noised: torch.Tensor
    sigma: torch.Tensor
    c_noise_cond: torch.Tensor


def augment_previous_frames(
    frames: torch.Tensor,
    *,
    sigma: float | torch.Tensor | None = None,
    sigma_sampler: Callable | None = None,
    offset_noise: float = 0.0,
    generator: GeneratorLike = None,
) -> PreviousFrames:
    """DIAMOND-style noise on the conditioning (previous) frames.

    VE / EDM convention (σ = noise std)::

        noised       = frames + σ_off·η + σ·ε     η, ε ~ N(0, 1)
        c_noise_cond = ln(σ) / 4                  (offset not included, as in DIAMOND)

    ``η`` is offset noise: one value per sample and per index of every dim before the last
    two (channel and frame), constant over the spatial dims (the last two). On DIAMOND's
    stacked (B, n·C, H, W) previous observations this is its ``apply_noise``: one value per
    sample and stacked channel. Only DIAMOND's CS:GO world model noises its previous frames
    (``noise_previous_obs``); it applies its offset noise (``sigma_offset_noise`` = 0.1 there)
    to them in training and none at inference (``offset_noise=0``; its sampler's ``s_cond``
    is 0.005). DIAMOND's Atari models (offset noise 0.3 on the *target* frame) never noise
    the previous frames.

    σ, per sample:

    * inference: a fixed ``sigma`` (a float > 0, or a (B,) / 0-d tensor, checked > 0 on the
      host for CPU tensors only);
    * training: ``sigma_sampler(B, generator=generator, device=frames.device)`` returning
      (B,) stds > 0 (checked on the host for CPU tensors only), e.g. the sampler of the
      main training σ as DIAMOND does; with neither ``sigma`` nor ``sigma_sampler`` the
      default is :func:`vidnoise.sigma_samplers.lognormal` with its defaults.

    Noise the frames once per generated frame and reuse the result for every denoising step.
    DIAMOND's sampler re-noises the previous frames inside its step loop, so after k steps
    their noise std is σ·√k while the network is told ``ln(σ)/4``; this function is pure and
    returns the σ that was actually applied.

    Random draws, in this order: σ (from the sampler, training only), ε (the frames' shape),
    η (only when ``offset_noise > 0``). With one generator per sample, sample ``i`` depends
    only on generator ``i`` (provided the sampler follows the same rule, as vidnoise's do).

    Args:
        frames: (B, C, H, W), (B, C, T, H, W) or (B, T, C, H, W) floating tensor.
        sigma: fixed noise std for inference; exclusive with ``sigma_sampler``.
        sigma_sampler: callable ``(batch_size, *, generator=None, device=None) -> (B,)``.
        offset_noise: std σ_off >= 0 of the offset noise.
        generator: None, one ``torch.Generator``, or one per sample.

    Returns:
        :class:`PreviousFrames` with ``noised``, ``sigma`` and ``c_noise_cond``.
    """
    _check_float_tensor("frames", frames)
    if frames.dim() not in (4, 5):
        raise ValueError(
            f"frames must have 4 dims (B, C, H, W) or 5 dims (B, C, T, H, W) / (B, T, C, H, W), "
            f"got shape {tuple(frames.shape)}"
        )
    offset_noise = check_float("offset_noise", offset_noise, low=0.0)
    if sigma is not None and sigma_sampler is not None:
        raise ValueError(
            "sigma and sigma_sampler are exclusive: give sigma (fixed, inference) or "
            f"sigma_sampler (training), got sigma of type {type(sigma).__name__} and "
            f"sigma_sampler {getattr(sigma_sampler, '__name__', type(sigma_sampler).__name__)}"
        )
    check_callable("sigma_sampler", sigma_sampler, optional=True)
    b = frames.shape[0]
    gens = as_generators(generator, b)
    dev = frames.device
    work = work_dtype(frames.dtype)

    if sigma is None:
        sampler = sigma_sampler if sigma_sampler is not None else lognormal
        _check_sampler_signature(sampler, b, gens, dev)
        sig = sampler(b, generator=gens, device=dev)
        if not isinstance(sig, torch.Tensor) or tuple(sig.shape) != (b,):
            got = tuple(sig.shape) if isinstance(sig, torch.Tensor) else type(sig).__name__
            raise ValueError(f"sigma_sampler must return a tensor of shape ({b},), got {got}")
        if sig.dtype == torch.bool or sig.is_complex():
            raise TypeError(f"sigma_sampler must return real σ values, got dtype {sig.dtype}")
        _same_device("sigma_sampler's σ", sig, dev)
        check_values("sigma_sampler's σ", sig, low=0.0, low_open=True)
        sig = sig.to(device=dev, dtype=work)
        _no_underflow("sigma_sampler's σ", sig)
        c_noise_cond = torch.log(sig) / 4
    elif isinstance(sigma, torch.Tensor):
        if sigma.dim() > 1 or (sigma.dim() == 1 and sigma.shape[0] != b):
            raise ValueError(
                f"sigma as a tensor must be 0-d or of shape ({b},) (dim 0 of frames), got "
                f"shape {tuple(sigma.shape)}"
            )
        if sigma.dtype == torch.bool or sigma.is_complex():
            raise TypeError(f"sigma must be a real tensor, got dtype {sigma.dtype}")
        _same_device("sigma", sigma, dev)
        check_values("sigma", sigma, low=0.0, low_open=True)
        sig = sigma.to(device=dev, dtype=work).expand(b).contiguous()
        _no_underflow("sigma", sig)
        c_noise_cond = torch.log(sig) / 4
    else:
        value = check_float("sigma", sigma, low=0.0, low_open=True)
        _no_underflow("sigma", torch.tensor([value], dtype=work))
        sig = torch.full((b,), value, dtype=work, device=dev)
        c_noise_cond = torch.full((b,), math.log(value) / 4, dtype=work, device=dev)

    eps = randn(frames.shape, generator=gens, device=dev, dtype=work)
    view = (b,) + (1,) * (frames.dim() - 1)
    noised = torch.addcmul(frames.to(work), sig.view(view), eps)
    if offset_noise > 0:
        eta = randn((*frames.shape[:-2], 1, 1), generator=gens, device=dev, dtype=work)
        noised = noised.add_(eta, alpha=offset_noise)
    return PreviousFrames(noised.to(frames.dtype), sig, c_noise_cond)


def _check_sampler_signature(sampler, b, gens, dev) -> None:
    """The σ sampler protocol ``(batch_size, *, generator=None, device=None)``, named before
    the call (a callable without these keywords would fail inside the call)."""
    try:
        inspect.signature(sampler).bind(b, generator=gens, device=dev)
    except TypeError as exc:
        raise TypeError(
            "sigma_sampler must accept (batch_size, *, generator=None, device=None) like "
            f"vidnoise.sigma_samplers.lognormal, got {sampler!r}: {exc}"
        ) from None
    except ValueError:  # no signature (some builtins): call it and see
        pass


def _no_underflow(name: str, sig: torch.Tensor) -> None:
    """σ > 0 that rounds to 0 in the working dtype would add no noise while ``ln(σ)/4``
    told the network otherwise (CPU only: it reads values)."""
    if sig.device.type != "cpu" or sig.numel() == 0:
        return
    zero = sig == 0
    if bool(zero.any()):
        i = int(zero.nonzero()[0, 0])
        raise ValueError(
            f"{name} must be > 0 in {sig.dtype} (the frames' working dtype), got a value "
            f"that rounds to 0 there (at index {i}): use σ >= {torch.finfo(sig.dtype).tiny:g} "
            f"or float64 frames"
        )


# ----------------------------------------------------------------------------- history
@dataclass(frozen=True)
class CorruptedHistory:
    """Result of :func:`corrupt_history`.

    Attributes:
        noised: the corrupted frames ``σc·ε + (1-σc)·frames``, same shape and dtype as the
            input.
        sigma: (B,) the noise fraction σc drawn for each sample (float32, float64 for
            float64 frames).
    """

    noised: torch.Tensor
    sigma: torch.Tensor


def corrupt_history(frames: torch.Tensor, max_ratio: float = 1 / 3, *,
                    generator: GeneratorLike = None) -> CorruptedHistory:
    """Corrupt autoregressive history (condition) frames, as Pyramid-Flow's training does::

        σc ~ U(0, max_ratio) per sample (dim 0),   noised = σc·ε + (1-σc)·frames

    Args:
        frames: (B, ...) floating tensor (e.g. (B, C, T, H, W) past latent frames).
        max_ratio: upper end of σc, in [0, 1] (reference: 1/3).
        generator: one generator or one per sample; σc is drawn first, then ε.

    Returns:
        :class:`CorruptedHistory` with ``noised`` (the frames to condition on) and ``sigma``
        (σc). Half-precision frames are combined in float32 and returned in their dtype.
    """
    check_tensor("frames", frames)
    if frames.dim() < 1:
        raise ValueError("frames must have a batch dim (dim 0), got a 0-d tensor")
    max_ratio = check_float("max_ratio", max_ratio, low=0.0, high=1.0)
    B = frames.shape[0]
    gens = as_generators(generator, B)
    wd = work_dtype(frames.dtype)
    sigma = rand((B,), generator=gens, device=frames.device, dtype=wd) * max_ratio
    eps = randn(frames.shape, generator=gens, device=frames.device, dtype=wd)
    s = sigma.view(B, *([1] * (frames.dim() - 1)))
    out = torch.lerp(frames.to(wd), eps, s).to(frames.dtype)  # σc·ε + (1-σc)·frames
    return CorruptedHistory(out, sigma)
