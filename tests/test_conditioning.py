"""Tests of vidnoise.conditioning: image-condition augmentation, history and previous-frame noise.

Statistical checks use fixed seeds and bounds derived from the sample size, written beside
each check. Z below is the two-sided normal quantile for a false-alarm probability of 1e-5
per check, so a correct implementation with a new seed fails about once in 1e5 runs, and a
real defect of the sizes named in the tests fails every time.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import vidnoise.conditioning as cond
from vidnoise.conditioning import (
    ConditionBatch,
    ImageConditionAugment,
    augment_previous_frames,
    concat_condition,
    condition,
)

Z = 4.417  # scipy.stats.norm.isf(0.5e-5): two-sided 1e-5
KS_ALPHA = 1e-4  # KS tests reject at p < 1e-4
MEDIAN = math.exp(-3.0)  # 0.049787: median of log σ ~ N(-3.0, 0.5²)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gens(*seeds: int) -> list[torch.Generator]:
    return [gen(s) for s in seeds]


def pixel_image(b: int, *, c: int = 3, h: int = 16, w: int = 16, seed: int = 0, layout="BCTHW"):
    """A [-1, 1] 'image' with structure: a smooth ramp plus uniform texture."""
    g = gen(1000 + seed)
    ramp = torch.linspace(-0.6, 0.6, w).expand(h, w)
    x = ramp + 0.4 * (2 * torch.rand(b, c, h, w, generator=g) - 1)
    x = x.unsqueeze(2)  # (B, C, 1, H, W)
    return x if layout == "BCTHW" else x.transpose(1, 2)


def toy_encode(x: torch.Tensor) -> torch.Tensor:
    """A linear stand-in for a VAE encoder: 2x average pooling, 3 -> 4 channels, scaling."""
    b, c, t, h, w = x.shape
    y = F.avg_pool2d(x.transpose(1, 2).reshape(b * t, c, h, w), 2)
    mix = torch.tensor(
        [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, -0.4, 0.5]], dtype=x.dtype
    )
    y = torch.einsum("oc,nchw->nohw", mix, y) * 1.15
    return y.reshape(b, t, 4, h // 2, w // 2).transpose(1, 2)


def frame(x: torch.Tensor, i: int, layout: str = "BCTHW") -> torch.Tensor:
    return x[:, :, i] if layout == "BCTHW" else x[:, i]


def per_sample_corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def assert_follows_image(latents: torch.Tensor, clean: torch.Tensor, layout="BCTHW"):
    """The check that catches CogVideoX's bug: the condition must correlate with the image."""
    r = per_sample_corr(frame(latents, 0, layout), frame(clean, 0, layout))
    assert bool((r > 0.99).all()), f"condition does not follow the image: corr {r.tolist()}"
    return r


def binomial_ok(k: int, n: int, p: float) -> tuple[bool, float]:
    """|k - np| <= Z·sqrt(np(1-p)) (normal approximation; np(1-p) >= 100 in every use)."""
    half = Z * math.sqrt(n * p * (1 - p))
    return abs(k - n * p) <= half, half


# ================================================================== the known bug (CogVideoX)
def noise_only_augment(aug, image, *, num_frames, encode=None, generator=None):
    """The WRONG variant of the early CogVideoX script: encodes σ·ε without the image.

    Kept here, never in the library, to show that the correlation check catches it.
    """
    b = image.shape[0]
    sigma = torch.exp(aug.log_sigma_mean + aug.log_sigma_std * torch.randn(b, generator=generator))
    noisy = torch.randn(image.shape, generator=generator) * sigma.view(b, 1, 1, 1, 1)  # BUG
    latents = noisy if encode is None else encode(noisy)
    return cond._pad_frames(latents, num_frames, "BCTHW")


# σ = e⁻³ (log_sigma_std=0) on an image of per-pixel variance ≈ 0.18: the expected correlation
# is 1/sqrt(1 + σ²/var) ≈ 0.993; with 768 elements per sample its sampling sd is about
# (1-ρ²)/sqrt(768) ≈ 5e-4, far from the 0.99 threshold. The noise-only variant has
# correlation ~ N(0, 1/768): below 0.99 with certainty, and below Z/sqrt(768) = 0.16 at 1e-5.
SMALL = ImageConditionAugment(log_sigma_std=0.0, dropout=0.0)


@pytest.mark.parametrize("encode", [None, toy_encode], ids=["pixel", "encoded"])
def test_condition_follows_image_and_noise_only_variant_fails(encode):
    image = pixel_image(8)
    clean = image if encode is None else toy_encode(image)
    got = SMALL.augment(image, num_frames=3, encode=encode, generator=gen(1))
    r = assert_follows_image(got.latents, clean)
    assert float(r.min()) > 0.99

    wrong = noise_only_augment(SMALL, image, num_frames=3, encode=encode, generator=gen(1))
    with pytest.raises(AssertionError, match="does not follow the image"):
        assert_follows_image(wrong, clean)
    if encode is None:  # iid noise against a fixed image: corr ~ N(0, 1/n), n = 768
        n = frame(clean, 0)[0].numel()
        r_wrong = per_sample_corr(frame(wrong, 0), frame(clean, 0))
        assert float(r_wrong.abs().max()) < Z / math.sqrt(n)


def test_default_settings_follow_image_pooled():
    # Default log σ ~ N(-3, 0.5): a few samples may draw σ ~ 0.2, so check the pooled batch,
    # whose noise power is E[σ²] = exp(-6 + 2·0.25) = 0.0041 against image variance ≈ 0.18:
    # expected pooled corr ≈ 0.988 > 0.95; the noise-only variant is ≈ 0.
    aug = ImageConditionAugment(dropout=0.0)
    image = pixel_image(64)
    got = aug.augment(image, num_frames=2, generator=gen(2))
    r = per_sample_corr(frame(got.latents, 0).reshape(1, -1), frame(image, 0).reshape(1, -1))
    assert float(r) > 0.95
    wrong = noise_only_augment(aug, image, num_frames=2, generator=gen(2))
    r_wrong = per_sample_corr(frame(wrong, 0).reshape(1, -1), frame(image, 0).reshape(1, -1))
    assert abs(float(r_wrong)) < Z / math.sqrt(image.numel())


def test_noise_is_sigma_times_unit_normal():
    # (noisy - image)/σ_i must be N(0, 1): with N = 16·3·256 = 12288 values, the sample mean
    # has sd 1/sqrt(N) and the sample variance sd sqrt(2/N) (chi-square), bounds Z·sd.
    aug = ImageConditionAugment(dropout=0.0)
    image = pixel_image(16).double()
    got = aug.augment(image, num_frames=1, generator=gen(3))
    assert got.latents.shape == image.shape
    z = (got.latents - image) / got.sigmas.view(-1, 1, 1, 1, 1)
    n = z.numel()
    assert abs(float(z.mean())) < Z / math.sqrt(n)
    assert abs(float(z.var()) - 1) < Z * math.sqrt(2 / n)
    # the wrong variant's output minus the image is not σ·ε: its scaled variance is ≈ 1 + var/σ²
    wrong = noise_only_augment(aug, image, num_frames=1, generator=gen(3))
    assert float(((wrong - image) / got.sigmas.view(-1, 1, 1, 1, 1)).var()) > 10


def test_no_public_name_returns_noise_alone():
    # The module's public API: the augmentation call always adds the noise to the image.
    assert set(cond.__all__) == {
        "LAYOUTS", "ConditionBatch", "CorruptedHistory", "ImageConditionAugment", "PreviousFrames",
        "augment_previous_frames", "concat_condition", "condition", "corrupt_history",
    }  # fmt: skip
    assert {f for f in vars(ImageConditionAugment) if not f.startswith("_")} >= {
        "augment",
        "condition",
    }


# ================================================================== σ distribution
def lognormal_quantile(p: float, mean=-3.0, std=0.5) -> float:
    return math.exp(mean + std * stats.norm.ppf(p))


def test_sigma_median_quantiles_and_ks():
    n = 20000
    aug = ImageConditionAugment(dropout=0.0)
    got = aug.augment(torch.zeros(n, 1, 1, 1, 1), num_frames=1, generator=gen(4))
    s = got.sigmas.double()
    assert got.sigmas.shape == (n,) and got.sigmas.dtype == torch.float32
    # Median e⁻³ = 0.0498 and quantiles: #{σ <= q_p} ~ Binomial(n, p) exactly, whatever the
    # distribution, so |count - np| <= Z·sqrt(np(1-p)) (np(1-p) >= 950 here).
    assert abs(lognormal_quantile(0.5) - 0.0498) < 1e-4
    for p in (0.05, 0.25, 0.5, 0.75, 0.95):
        k = int((s <= lognormal_quantile(p)).sum())
        ok, half = binomial_ok(k, n, p)
        assert ok, f"p={p}: {k} of {n} below q_p, allowed {n * p:.0f} ± {half:.0f}"
    # KS test of log σ against N(-3, 0.5²): one-sample, exact distribution in scipy.
    log_s = s.log().numpy()
    assert stats.kstest(log_s, stats.norm(-3.0, 0.5).cdf).pvalue > KS_ALPHA
    # Power: the same test rejects a median off by 5 % (log shift 0.05 = 0.1 sd) and a 10 %
    # wider spread, so passing it means something.
    assert stats.kstest(log_s, stats.norm(-2.95, 0.5).cdf).pvalue < KS_ALPHA
    assert stats.kstest(log_s, stats.norm(-3.0, 0.55).cdf).pvalue < KS_ALPHA


def test_per_batch_sigma():
    aug = ImageConditionAugment(per_sample=False, dropout=0.0)
    image = pixel_image(5).double()
    got = aug.augment(image, num_frames=1, generator=gen(5))
    assert got.sigmas.shape == (5,)
    assert bool((got.sigmas == got.sigmas[0]).all())  # one σ for the batch
    z = (got.latents - image) / got.sigmas[0]
    assert abs(float(z.var()) - 1) < Z * math.sqrt(2 / z.numel())
    # the per-batch σ follows the same log-normal: 2000 batches, KS at p > 1e-4
    g = gen(6)
    tiny = torch.zeros(2, 1, 1, 1, 1)
    draws = torch.stack([aug.augment(tiny, num_frames=1, generator=g).sigmas for _ in range(2000)])
    assert bool((draws[:, 0] == draws[:, 1]).all())
    log_s = draws[:, 0].double().log().numpy()
    assert stats.kstest(log_s, stats.norm(-3.0, 0.5).cdf).pvalue > KS_ALPHA
    # per_sample=True gives distinct σ within a batch
    per = ImageConditionAugment(dropout=0.0).augment(tiny, num_frames=1, generator=gen(6))
    assert float(per.sigmas[0]) != float(per.sigmas[1])


# ================================================================== dropout
def test_dropout_rate_zeros_and_kept_sigma():
    n = 20000
    image = torch.rand(n, 1, 1, 2, 2, generator=gen(7)) + 0.5  # never zero
    aug = ImageConditionAugment()  # dropout 0.05
    got = aug.augment(image, num_frames=2, generator=gen(8))
    k = int(got.dropped.sum())
    # #dropped ~ Binomial(20000, 0.05): 1000 ± Z·sqrt(950) = 1000 ± 136
    ok, half = binomial_ok(k, n, 0.05)
    assert ok, f"{k} of {n} dropped, allowed {n * 0.05:.0f} ± {half:.0f}"
    assert got.dropped.dtype == torch.bool and got.dropped.shape == (n,)
    flat = got.latents.reshape(n, -1)
    assert bool((flat[got.dropped] == 0).all())  # dropped: exactly zero, every frame
    assert bool((frame(got.latents, 0)[~got.dropped] != 0).all())
    # The same seed without dropout draws the same σ and the same noise: dropped samples keep
    # their σ, the others are unchanged.
    ref = ImageConditionAugment(dropout=0.0).augment(image, num_frames=2, generator=gen(8))
    assert torch.equal(ref.sigmas, got.sigmas)
    assert bool(torch.isfinite(got.sigmas[got.dropped]).all() and (got.sigmas > 0).all())
    assert torch.equal(ref.latents[~got.dropped], got.latents[~got.dropped])
    assert not bool(ref.dropped.any())


def test_dropout_edges():
    image = pixel_image(6)
    none = ImageConditionAugment(dropout=0.0).augment(image, num_frames=2, generator=gen(9))
    every = ImageConditionAugment(dropout=1.0).augment(image, num_frames=2, generator=gen(9))
    assert not bool(none.dropped.any()) and bool(every.dropped.all())
    assert bool((every.latents == 0).all())
    assert torch.equal(none.sigmas, every.sigmas)


# ================================================================== padding, encode, layouts
class Spy:
    def __init__(self, fn=toy_encode):
        self.fn = fn
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x):
        self.inputs.append(x.clone())
        return self.fn(x)


@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
@pytest.mark.parametrize("num_frames", [1, 4])
def test_padding_and_encode_once(layout, num_frames):
    t_axis = 2 if layout == "BCTHW" else 1
    image = pixel_image(3, layout=layout)

    def encode(x):  # toy_encode in either layout
        x = x if layout == "BCTHW" else x.transpose(1, 2)
        y = toy_encode(x)
        return y if layout == "BCTHW" else y.transpose(1, 2)

    spy = Spy(encode)
    aug = SMALL  # fixed σ = e⁻³, so the correlation check below holds for every sample
    got = aug.augment(image, num_frames=num_frames, encode=spy, layout=layout, generator=gen(10))
    assert isinstance(got, ConditionBatch)
    expect = list(encode(image).shape)
    expect[t_axis] = num_frames
    assert tuple(got.latents.shape) == tuple(expect)
    for i in range(1, num_frames):
        assert bool((frame(got.latents, i, layout) == 0).all())
    # encode ran once, on one frame (never on padding), and on the noisy image: it equals the
    # encode=None result of the same seed (image + σ·ε), which follows the image.
    assert len(spy.inputs) == 1
    assert spy.inputs[0].shape == image.shape
    plain = aug.augment(image, num_frames=1, layout=layout, generator=gen(10))
    assert torch.equal(spy.inputs[0], plain.latents)
    assert not torch.equal(spy.inputs[0], image)
    assert_follows_image(spy.inputs[0], image, layout)
    assert torch.equal(frame(got.latents, 0, layout), frame(encode(spy.inputs[0]), 0, layout))


def test_layouts_agree():
    # T = 1, so both layouts hold the image in the same memory order and draw the same ε.
    image = pixel_image(4)
    aug = ImageConditionAugment(dropout=0.5)
    a = aug.augment(image, num_frames=3, layout="BCTHW", generator=gen(11))
    b = aug.augment(image.transpose(1, 2), num_frames=3, layout="BTCHW", generator=gen(11))
    assert torch.equal(a.latents, b.latents.transpose(1, 2))
    assert torch.equal(a.sigmas, b.sigmas) and torch.equal(a.dropped, b.dropped)


def test_inference_condition_is_clean():
    image = pixel_image(2)
    spy = Spy()
    out = condition(image, 5, spy)
    assert len(spy.inputs) == 1 and torch.equal(spy.inputs[0], image)
    assert out.shape == (2, 4, 5, 8, 8)
    assert torch.equal(out[:, :, :1], toy_encode(image))
    assert bool((out[:, :, 1:] == 0).all())
    assert torch.equal(ImageConditionAugment().condition(image, 5, toy_encode), out)
    assert torch.equal(condition(image, 1), image)
    btchw = condition(image.transpose(1, 2), 3, layout="BTCHW")
    assert torch.equal(btchw.transpose(1, 2), condition(image, 3))


def test_latent_space():
    latent = torch.randn(3, 16, 1, 4, 4, generator=gen(12))
    aug = ImageConditionAugment(space="latent", log_sigma_std=0.0, dropout=0.0)
    got = aug.augment(latent, num_frames=2, generator=gen(13))
    assert got.latents.shape == (3, 16, 2, 4, 4)
    assert_follows_image(got.latents, latent)
    with pytest.raises(ValueError, match="encode must be None with space='latent'"):
        aug.augment(latent, num_frames=2, encode=toy_encode)


def test_encode_output_checked():
    image = pixel_image(2)
    aug = ImageConditionAugment()
    with pytest.raises(ValueError, match="encode.*frame axis"):
        aug.augment(image, num_frames=2, encode=lambda x: x[:, :, 0])
    with pytest.raises(ValueError, match="encode must keep the batch size"):
        aug.augment(image, num_frames=2, encode=lambda x: x[:1])
    with pytest.raises(ValueError, match="num_frames=2"):
        aug.augment(image, num_frames=2, encode=lambda x: x.repeat(1, 1, 3, 1, 1))
    with pytest.raises(TypeError, match="encode must return a torch.Tensor"):
        aug.augment(image, num_frames=2, encode=lambda x: x.numpy())


# ================================================================== determinism, dtypes, empty
def test_per_sample_generators():
    aug = ImageConditionAugment(dropout=0.5)
    image = pixel_image(3)
    full = aug.augment(image, num_frames=2, generator=gens(20, 21, 22))
    again = aug.augment(image, num_frames=2, generator=gens(20, 21, 22))
    alone = aug.augment(image[1:2], num_frames=2, generator=gens(21))
    moved = aug.augment(image[[1, 0]], num_frames=2, generator=gens(21, 99))
    for r, i in ((again, 1), (alone, 0), (moved, 0)):
        assert torch.equal(r.latents[i], full.latents[1])
        assert torch.equal(r.sigmas[i], full.sigmas[1])
        assert torch.equal(r.dropped[i], full.dropped[1])
    assert torch.equal(again.latents, full.latents)
    with pytest.raises(ValueError, match="per_sample=False"):
        batch_sigma = ImageConditionAugment(per_sample=False)
        batch_sigma.augment(image, num_frames=2, generator=gens(1, 2, 3))
    with pytest.raises(ValueError, match="one generator per item"):
        aug.augment(image, num_frames=2, generator=gens(1, 2))


def test_documented_draw_order():
    # The docstring's stream: log σ (B), ε (image shape), dropout uniforms (B). Rebuilding the
    # result from those draws pins it, so a seed keeps its meaning across releases.
    from vidnoise.noise import rand, randn

    aug = ImageConditionAugment(dropout=0.5)
    image = pixel_image(6).double()
    got = aug.augment(image, num_frames=2, generator=gen(80))
    g = gen(80)
    sigma = torch.exp(-3.0 + 0.5 * randn((6,), generator=g, dtype=torch.float64))
    noisy = image + sigma.view(6, 1, 1, 1, 1) * randn(image.shape, generator=g, dtype=torch.float64)
    dropped = rand((6,), generator=g, dtype=torch.float64) < 0.5
    assert torch.equal(got.sigmas, sigma) and torch.equal(got.dropped, dropped)
    expect = noisy * ~dropped.view(6, 1, 1, 1, 1)  # addcmul may fuse: float64 rounding only
    assert torch.allclose(got.latents[:, :, :1], expect, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    image = pixel_image(4)
    aug = ImageConditionAugment(dropout=0.25)
    low = aug.augment(image.to(dtype), num_frames=3, generator=gen(30))
    ref = aug.augment(image.to(dtype).float(), num_frames=3, generator=gen(30))
    assert low.latents.dtype == dtype and low.sigmas.dtype == torch.float32
    # computed in float32 and rounded once
    assert torch.equal(low.latents, ref.latents.to(dtype))
    assert torch.equal(low.sigmas, ref.sigmas) and torch.equal(low.dropped, ref.dropped)
    out = augment_previous_frames(image.to(dtype), sigma=0.1, generator=gen(31))
    ref2 = augment_previous_frames(image.to(dtype).float(), sigma=0.1, generator=gen(31))
    assert out.noised.dtype == dtype and torch.equal(out.noised, ref2.noised.to(dtype))
    cat = concat_condition(torch.zeros(4, 2, 3, 16, 16, dtype=dtype), low.latents, layout="BCTHW")
    assert cat.dtype == dtype and cat.shape == (4, 5, 3, 16, 16)


def test_float64_stays_float64():
    got = ImageConditionAugment().augment(pixel_image(2).double(), num_frames=2, generator=gen(0))
    assert got.latents.dtype == torch.float64 and got.sigmas.dtype == torch.float64


@pytest.mark.parametrize("per_sample", [True, False])
def test_empty_batch(per_sample):
    image = torch.zeros(0, 3, 1, 8, 8)
    spy = Spy()
    aug = ImageConditionAugment(per_sample=per_sample)
    got = aug.augment(image, num_frames=4, encode=spy, generator=gen(0))
    assert got.latents.shape == (0, 4, 4, 4, 4)
    assert got.sigmas.shape == (0,) and got.dropped.shape == (0,)
    assert len(spy.inputs) == 1
    if per_sample:
        assert aug.augment(image, num_frames=4, generator=[]).latents.shape == (0, 3, 4, 8, 8)
    assert condition(image, 2).shape == (0, 3, 2, 8, 8)
    cat = concat_condition(torch.zeros(0, 16, 4, 4, 4), got.latents, layout="BCTHW")
    assert cat.shape == (0, 20, 4, 4, 4)
    prev = augment_previous_frames(torch.zeros(0, 3, 8, 8), sigma=0.1, generator=[])
    assert prev.noised.shape == (0, 3, 8, 8) and prev.sigma.shape == (0,)
    prev = augment_previous_frames(
        torch.zeros(0, 3, 8, 8), sigma_sampler=fixed_sampler(0.2), offset_noise=0.3
    )
    assert prev.c_noise_cond.shape == (0,)


@given(
    b=st.integers(0, 3),
    c=st.integers(1, 4),
    h=st.integers(1, 5),
    num_frames=st.integers(1, 5),
    layout=st.sampled_from(["BCTHW", "BTCHW"]),
)
def test_shapes_property(b, c, h, num_frames, layout):
    image = torch.rand(b, c, 1, h, h + 1)
    image = image if layout == "BCTHW" else image.transpose(1, 2)
    got = ImageConditionAugment(dropout=0.5).augment(
        image, num_frames=num_frames, layout=layout, generator=gen(b + c)
    )
    t_axis = 2 if layout == "BCTHW" else 1
    shape = list(image.shape)
    shape[t_axis] = num_frames
    assert list(got.latents.shape) == shape
    c_axis = 3 - t_axis
    video = torch.zeros([5 if i == c_axis else n for i, n in enumerate(shape)])
    cat = concat_condition(video, got.latents, layout=layout)
    assert cat.shape[c_axis] == 5 + c
    assert torch.equal(cat.narrow(c_axis, 5, c), got.latents)


# ================================================================== concat_condition
@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
def test_concat_condition(layout):
    c_axis = 1 if layout == "BCTHW" else 2
    noisy = torch.randn(2, 16, 5, 6, 6) if layout == "BCTHW" else torch.randn(2, 5, 16, 6, 6)
    c = torch.randn(2, 4, 5, 6, 6) if layout == "BCTHW" else torch.randn(2, 5, 4, 6, 6)
    out = concat_condition(noisy, c.double(), layout=layout)
    assert out.dtype == noisy.dtype and out.shape[c_axis] == 20
    assert torch.equal(out.narrow(c_axis, 0, 16), noisy)
    assert torch.equal(out.narrow(c_axis, 16, 4), c)


def test_concat_condition_mismatch_names_both_shapes():
    noisy = torch.zeros(2, 16, 5, 6, 6)
    with pytest.raises(ValueError, match=r"batch size.*\(2, 16, 5, 6, 6\).*\(3, 4, 5, 6, 6\)"):
        concat_condition(noisy, torch.zeros(3, 4, 5, 6, 6), layout="BCTHW")
    with pytest.raises(ValueError, match=r"\(2, 16, 5, 6, 6\).*\(2, 4, 4, 6, 6\)"):
        concat_condition(noisy, torch.zeros(2, 4, 4, 6, 6), layout="BCTHW")
    with pytest.raises(ValueError, match=r"channel axis \(dim 2 of layout='BTCHW'\)"):
        concat_condition(noisy, torch.zeros(2, 4, 5, 6, 6), layout="BTCHW")
    with pytest.raises(ValueError, match="condition must have a frame axis"):
        concat_condition(noisy, torch.zeros(2, 4, 6, 6), layout="BCTHW")
    with pytest.raises(ValueError, match="layout must be one of"):
        concat_condition(noisy, noisy, layout="BHWC")


# ================================================================== bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dropout": -0.1}, r"dropout must be in \[0.0, 1.0\]"),
        ({"dropout": 1.5}, r"dropout must be in \[0.0, 1.0\]"),
        ({"dropout": float("nan")}, "dropout must be a number"),
        ({"log_sigma_std": -0.5}, r"log_sigma_std must be in \[0.0, inf\]"),
        ({"log_sigma_mean": float("inf")}, "log_sigma_mean must be in"),
        ({"space": "rgb"}, r"space must be one of \['pixel', 'latent'\]"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageConditionAugment(**kwargs)


def test_bad_augment_arguments():
    aug = ImageConditionAugment()
    image = pixel_image(2)
    with pytest.raises(ValueError, match=r"image must have a frame axis.*unsqueeze\(2\)"):
        aug.augment(image[:, :, 0], num_frames=3)
    with pytest.raises(ValueError, match=r"image must have a frame axis.*unsqueeze\(1\)"):
        aug.augment(image[:, :, 0], num_frames=3, layout="BTCHW")
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        aug.augment(image, num_frames=0)
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        condition(image, 0)
    with pytest.raises(ValueError, match="layout must be one of"):
        aug.augment(image, num_frames=3, layout="BTHWC")
    with pytest.raises(ValueError, match="does layout match the tensor"):
        aug.augment(image, num_frames=3, layout="BTCHW")
    with pytest.raises(ValueError, match="does layout match the tensor"):
        condition(image.transpose(1, 2), 3, layout="BCTHW")
    with pytest.raises(ValueError, match="image must hold one frame"):
        aug.augment(image.repeat(1, 1, 2, 1, 1), num_frames=3)
    with pytest.raises(ValueError, match="image must have a floating dtype"):
        aug.augment(image.to(torch.int32), num_frames=3)
    with pytest.raises(TypeError, match="image must be a torch.Tensor"):
        aug.augment(image.numpy(), num_frames=3)
    with pytest.raises(TypeError, match="encode must be a callable"):
        aug.augment(image, num_frames=3, encode="vae")


# ================================================================== previous frames (DIAMOND)
def fixed_sampler(value: float, calls: list | None = None):
    def sampler(batch_size, *, generator=None, device=None):
        if calls is not None:
            calls.append((batch_size, generator, device))
        return torch.full((batch_size,), value, device=device)

    return sampler


def lognormal_sampler(batch_size, *, generator=None, device=None):
    """A test sampler: σ = exp(N(-0.4, 1.2²)) clipped to [2e-3, 20] (DIAMOND Atari)."""
    from vidnoise.noise import randn

    z = randn((batch_size,), generator=generator, device=device)
    return (z * 1.2 - 0.4).exp().clamp(2e-3, 20.0)


def unit_noise_ok(z: torch.Tensor) -> bool:
    """Sample mean within Z/sqrt(N) of 0 and sample variance within Z·sqrt(2/N) of 1."""
    n = z.numel()
    return abs(float(z.mean())) < Z / math.sqrt(n) and abs(float(z.var()) - 1) < Z * math.sqrt(
        2 / n
    )


@pytest.mark.parametrize("shape", [(4, 12, 16, 16), (4, 3, 4, 16, 16)])
def test_previous_frames_fixed_sigma(shape):
    frames = torch.rand(shape, generator=gen(40), dtype=torch.float64) * 2 - 1
    out = augment_previous_frames(frames, sigma=0.1, generator=gen(41))
    noised, sigma, c_noise_cond = out.noised, out.sigma, out.c_noise_cond
    assert noised.shape == frames.shape and noised.dtype == frames.dtype
    assert torch.equal(sigma, torch.full((4,), 0.1, dtype=torch.float64))
    assert torch.equal(c_noise_cond, torch.full((4,), math.log(0.1) / 4, dtype=torch.float64))
    assert unit_noise_ok((noised - frames) / 0.1)
    per = torch.tensor([0.05, 0.1, 0.5, 2.0], dtype=torch.float64)
    out = augment_previous_frames(frames, sigma=per, generator=gen(41))
    assert torch.allclose(out.c_noise_cond, per.log() / 4, rtol=0, atol=1e-15)
    assert unit_noise_ok((out.noised - frames) / per.view(-1, *[1] * (frames.dim() - 1)))


def test_previous_frames_sampled_sigma():
    calls = []
    frames = torch.rand(8, 2, 3, 8, 8, generator=gen(42), dtype=torch.float64)
    g = gen(43)
    out = augment_previous_frames(frames, sigma_sampler=fixed_sampler(0.3, calls), generator=g)
    assert calls == [(8, g, frames.device)]
    assert bool((out.sigma == torch.tensor(0.3).double()).all())  # the sampler's float32 0.3
    out = augment_previous_frames(frames, sigma_sampler=lognormal_sampler, generator=gen(44))
    assert torch.equal(out.sigma, lognormal_sampler(8, generator=gen(44)).double())
    assert len(set(out.sigma.tolist())) == 8
    assert torch.allclose(out.c_noise_cond, out.sigma.log() / 4, rtol=0, atol=1e-15)
    assert unit_noise_ok((out.noised - frames) / out.sigma.view(8, 1, 1, 1, 1))


def test_previous_frames_default_sampler():
    from vidnoise import sigma_samplers  # the default training sampler

    frames = torch.zeros(6, 3, 8, 8)
    out = augment_previous_frames(frames, generator=gen(45))
    assert torch.equal(out.sigma, sigma_samplers.lognormal(6, generator=gen(45)).float())
    assert torch.allclose(out.c_noise_cond, out.sigma.log() / 4)
    alone = augment_previous_frames(frames[2:3], generator=gens(52))
    full = augment_previous_frames(frames, generator=gens(50, 51, 52, 53, 54, 55))
    assert torch.equal(alone.noised[0], full.noised[2]) and alone.sigma[0] == full.sigma[2]


def test_offset_noise_constant_over_space():
    # ε is drawn before η, so the same seed with and without offset noise differs by exactly
    # σ_off·η: constant over H, W, and N(0, σ_off²) over its B·C·T = 2400 values (mean and
    # variance bounds of unit_noise_ok).
    frames = torch.rand(100, 3, 8, 5, 5, generator=gen(46), dtype=torch.float64)
    out = augment_previous_frames(frames, sigma=0.5, offset_noise=0.3, generator=gen(47))
    plain = augment_previous_frames(frames, sigma=0.5, generator=gen(47))
    d = out.noised - plain.noised
    assert float((d - d[..., :1, :1]).abs().max()) < 1e-12
    assert unit_noise_ok(d[..., 0, 0] / 0.3)
    # the level told to the network ignores the offset (as in DIAMOND): ln(σ)/4
    assert torch.equal(out.c_noise_cond, plain.c_noise_cond)
    assert unit_noise_ok((plain.noised - frames) / 0.5)


def test_noise_once_not_in_the_step_loop():
    # DIAMOND's sampler re-noises the previous frames in every denoising step; after k steps
    # the noise std is σ·sqrt(k) while c_noise_cond still says ln(σ)/4. The unit-noise check
    # (chi-square bound on N = 16384 values) accepts one call and rejects that variant.
    frames = torch.rand(4, 4, 32, 32, generator=gen(47), dtype=torch.float64)
    out = augment_previous_frames(frames, sigma=0.2, generator=gen(48))
    assert unit_noise_ok((out.noised - frames) / out.sigma.view(4, 1, 1, 1))
    x = frames
    g = gen(48)
    for _ in range(4):  # the wrong way: inside a 4-step loop
        step = augment_previous_frames(x, sigma=0.2, generator=g)
        x, sigma = step.noised, step.sigma
    assert not unit_noise_ok((x - frames) / sigma.view(4, 1, 1, 1))


def test_previous_frames_per_sample_generators():
    frames = torch.rand(3, 2, 4, 6, 6, generator=gen(49))
    kw = {"sigma_sampler": lognormal_sampler, "offset_noise": 0.1}
    full = augment_previous_frames(frames, generator=gens(60, 61, 62), **kw)
    again = augment_previous_frames(frames, generator=gens(60, 61, 62), **kw)
    alone = augment_previous_frames(frames[2:], generator=gens(62), **kw)
    assert all(torch.equal(getattr(full, f), getattr(again, f))
               for f in ("noised", "sigma", "c_noise_cond"))
    assert torch.equal(alone.noised[0], full.noised[2])
    assert torch.equal(alone.sigma[0], full.sigma[2])


def test_previous_frames_bad_input():
    frames = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="sigma and sigma_sampler are exclusive"):
        augment_previous_frames(frames, sigma=0.1, sigma_sampler=lognormal_sampler)
    with pytest.raises(ValueError, match=r"sigma must be in \(0.0, inf\]"):
        augment_previous_frames(frames, sigma=0.0)
    with pytest.raises(ValueError, match=r"sigma must be in \(0.0, inf\]"):
        augment_previous_frames(frames, sigma=-1.0)
    with pytest.raises(ValueError, match=r"offset_noise must be in \[0.0, inf\]"):
        augment_previous_frames(frames, sigma=0.1, offset_noise=-0.1)
    with pytest.raises(ValueError, match="frames must have 4 dims"):
        augment_previous_frames(frames[0], sigma=0.1)
    with pytest.raises(ValueError, match=r"sigma as a tensor must be 0-d or of shape \(2,\)"):
        augment_previous_frames(frames, sigma=torch.ones(3))
    with pytest.raises(ValueError, match=r"sigma_sampler must return a tensor of shape \(2,\)"):
        augment_previous_frames(frames, sigma_sampler=lambda b, **kw: torch.ones(b, 1))
    with pytest.raises(TypeError, match="sigma_sampler must be a callable"):
        augment_previous_frames(frames, sigma_sampler=0.5)
    with pytest.raises(ValueError, match="one generator per item"):
        augment_previous_frames(frames, sigma=0.1, generator=gens(1))


# ================================================================== history (Pyramid-Flow)
def test_corrupt_history_is_defined_here():
    from vidnoise.conditioning import corrupt_history

    assert corrupt_history.__module__ == "vidnoise.conditioning"
    assert "Pyramid-Flow" in corrupt_history.__doc__


@pytest.mark.parametrize("max_ratio", [1 / 3, 0.2])
def test_corrupt_history_behaves_as_specified(max_ratio):
    # out = σc·ε + (1-σc)·frames, σc ~ U(0, max_ratio) per sample. With the same seed, frames
    # of ones and of zeros give out1 - out0 = 1 - σc, which recovers σc without trusting the
    # function's own report; then out0 = σc·ε recovers ε.
    n = 5000
    shape = (n, 2, 1, 2, 2)
    ones, zeros = torch.ones(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    res1 = cond.corrupt_history(ones, max_ratio, generator=gen(70))
    out1, out0 = res1.noised, cond.corrupt_history(zeros, max_ratio, generator=gen(70)).noised
    sc = 1 - (out1 - out0).reshape(n, -1).mean(1)
    assert float(((out1 - out0).reshape(n, -1) - (1 - sc)[:, None]).abs().max()) < 1e-12
    assert float(sc.min()) >= 0 and float(sc.max()) <= max_ratio
    assert torch.allclose(res1.sigma, sc, rtol=0, atol=1e-12)  # the reported σc is the applied one
    # KS against U(0, max_ratio) (p > 1e-4), with power against U(0, 0.9·max_ratio)
    assert stats.kstest(sc.numpy(), stats.uniform(0, max_ratio).cdf).pvalue > KS_ALPHA
    assert stats.kstest(sc.numpy(), stats.uniform(0, 0.9 * max_ratio).cdf).pvalue < KS_ALPHA
    eps = out0 / sc.view(n, 1, 1, 1, 1)
    assert unit_noise_ok(eps)
    frames = torch.rand(shape, generator=gen(71), dtype=torch.float64)
    out = cond.corrupt_history(frames, max_ratio, generator=gen(70)).noised
    expect = sc.view(n, 1, 1, 1, 1) * eps + (1 - sc.view(n, 1, 1, 1, 1)) * frames
    assert torch.allclose(out, expect, rtol=0, atol=1e-9)
    # per-sample generators: sample i depends only on generator i
    full = cond.corrupt_history(frames[:3], max_ratio, generator=gens(1, 2, 3))
    alone = cond.corrupt_history(frames[2:3], max_ratio, generator=gens(3))
    assert torch.equal(full.noised[2], alone.noised[0]) and full.sigma[2] == alone.sigma[0]


def test_corrupt_history_returns_one_frozen_result():
    # one result style: a frozen dataclass, no return_sigma= tuple
    import dataclasses

    frames = torch.rand(3, 2, 2, 4, 4, generator=gen(72))
    res = cond.corrupt_history(frames, generator=gen(73))
    assert isinstance(res, cond.CorruptedHistory) and dataclasses.is_dataclass(res)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.sigma = None
    assert res.noised.shape == frames.shape and res.sigma.shape == (3,)
    with pytest.raises(TypeError, match="return_sigma"):
        cond.corrupt_history(frames, return_sigma=True)
    half = cond.corrupt_history(frames.half(), generator=gen(73))
    assert half.noised.dtype == torch.float16 and half.sigma.dtype == torch.float32
    assert torch.allclose(half.noised.float(), res.noised, atol=2e-3)  # same draws, float32 math
    empty = cond.corrupt_history(frames[:0])
    assert empty.noised.shape == (0, 2, 2, 4, 4) and empty.sigma.shape == (0,)
    meta = cond.corrupt_history(frames.to("meta"))
    assert meta.noised.is_meta and meta.sigma.shape == (3,)


# ================================================================== device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generators_and_devices():
    dev = torch.device("cuda")
    image = pixel_image(3).to(dev)
    g = torch.Generator(dev).manual_seed(0)
    got = ImageConditionAugment().augment(image, num_frames=2, generator=g)
    assert got.latents.device.type == "cuda" and got.sigmas.device.type == "cuda"
    assert got.dropped.device.type == "cuda"
    out = augment_previous_frames(image[:, :, 0], sigma=0.1, offset_noise=0.1, generator=g)
    assert out.noised.device.type == "cuda" and out.c_noise_cond.device.type == "cuda"
    with pytest.raises(ValueError, match="generator"):
        ImageConditionAugment().augment(image, num_frames=2, generator=gen(0))


# ================================================================== convention traps
def test_pixel_image_on_a_0_255_scale_is_refused():
    aug = ImageConditionAugment()
    img = pixel_image(2)  # in [-1, 1]
    aug.augment(img, num_frames=3, generator=gen(1))  # fine
    with pytest.raises(ValueError, match=r"image must be a pixel image in \[-1, 1\].*/ 127\.5 - 1"):
        aug.augment((img + 1) * 127.5, num_frames=3, generator=gen(1))
    with pytest.raises(ValueError, match=r"torch\.uint8: convert .* / 127\.5 - 1"):
        aug.augment(((img + 1) * 127.5).to(torch.uint8), num_frames=3)
    # an image latent has no such range; a bicubic overshoot to ±1.2 is still a pixel image
    ImageConditionAugment(space="latent").augment(img * 4, num_frames=3, generator=gen(1))
    aug.augment(img * 1.2, num_frames=3, generator=gen(1))


def test_log_sigma_mean_given_as_sigma_is_named():
    with pytest.raises(ValueError, match=r"log_sigma_mean=math\.log\(0\.05\) = -2\.996"):
        ImageConditionAugment(log_sigma_mean=0.05)
    ImageConditionAugment(log_sigma_mean=math.log(0.05))  # the fix works
    ImageConditionAugment(log_sigma_mean=0.0)  # median σ = 1 is allowed (unusual, not σ)


def test_augment_and_condition_share_their_signature():
    import inspect

    aug = ImageConditionAugment(dropout=0.0, log_sigma_std=0.0, log_sigma_mean=-30.0)
    a = inspect.signature(aug.augment).parameters
    c = inspect.signature(aug.condition).parameters
    for name in ("image", "num_frames", "encode", "layout"):
        assert a[name].kind == c[name].kind and a[name].default == c[name].default, name
    assert list(a)[:4] == list(c)[:4]
    img = pixel_image(2)
    # positional num_frames and encode, as condition takes them (σ = e^-30: no visible noise)
    got = aug.augment(img, 3, toy_encode, generator=gen(2)).latents
    torch.testing.assert_close(got, aug.condition(img, 3, toy_encode), rtol=1e-6, atol=1e-6)


def test_negative_sigma_from_a_sampler_or_tensor_is_named():
    frames = torch.zeros(3, 2, 4, 4)
    with pytest.raises(ValueError, match=r"sigma_sampler's σ must be in \(0.0, inf\]"):
        augment_previous_frames(frames, sigma_sampler=lambda b, **kw: torch.full((b,), -0.1))
    with pytest.raises(ValueError, match=r"sigma_sampler's σ must be in"):
        augment_previous_frames(frames, sigma_sampler=lambda b, **kw: torch.zeros(b))
    with pytest.raises(TypeError, match="sigma_sampler must return real"):
        augment_previous_frames(frames, sigma_sampler=lambda b, **kw: torch.ones(b, dtype=bool))
    with pytest.raises(ValueError, match=r"sigma must be in \(0.0, inf\]"):
        augment_previous_frames(frames, sigma=torch.tensor([0.1, -0.1, 0.1]))
    with pytest.raises(TypeError, match="sigma must be a real tensor"):
        augment_previous_frames(frames, sigma=torch.ones(3, dtype=torch.complex64))
    for bad in (torch.ones(3, dtype=torch.bool), torch.ones(3, 2, 2, dtype=torch.complex64)):
        with pytest.raises(ValueError, match="frames must have a floating dtype"):
            augment_previous_frames(bad, sigma=0.1)


# ================================================================== silent results found by fuzzing
def test_encode_output_on_another_device_is_named():
    # before: an encode returning a meta tensor passed, and augment returned meta latents
    # (no values) without a word
    img = pixel_image(2)
    for call in (lambda e: ImageConditionAugment().augment(img, 3, e, generator=gen(1)),
                 lambda e: cond.condition(img, 3, e)):
        with pytest.raises(ValueError, match=r"encode must return a tensor on the image's "
                                             r"device cpu, got one on meta"):
            call(lambda x: x.to("meta"))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_pixel_image_is_named(bad):
    # before: a NaN pixel image passed the [-1, 1] check (nan > 2 is False) and came back as
    # NaN latents; the check already reads the values, so it counts the non-finite ones
    img = pixel_image(2).clone()
    img[1, 0, 0, 3, 4] = bad
    with pytest.raises(ValueError, match=r"image must hold finite values, got 1 of 1536 values"):
        ImageConditionAugment().augment(img, 3, generator=gen(1))


def test_meta_sigma_for_real_frames_is_named():
    # before: NotImplementedError "Cannot copy out of meta tensor" from deep inside torch
    frames = torch.rand(2, 3, 4, 4, generator=gen(2))
    with pytest.raises(ValueError, match="sigma is on meta but frames are on cpu"):
        augment_previous_frames(frames, sigma=torch.ones(2, device="meta"))
    with pytest.raises(ValueError, match="sigma_sampler's σ is on meta but frames are on cpu"):
        augment_previous_frames(
            frames, sigma_sampler=lambda b, **kw: torch.ones(b, device="meta"))
    # frames on meta: the whole call runs on meta (no value is read)
    out = augment_previous_frames(frames.to("meta"), offset_noise=0.1)
    assert out.noised.is_meta and out.sigma.is_meta and out.sigma.shape == (2,)
    out = augment_previous_frames(frames.to("meta"), sigma=torch.ones(2, device="meta"))
    assert out.noised.is_meta


@pytest.mark.parametrize("sigma", [1e-50, torch.tensor([1e-3, 1e-50], dtype=torch.float64)])
def test_sigma_that_underflows_in_the_working_dtype_is_named(sigma):
    # before: σ = 1e-50 became 0 in float32, the frames came back unnoised and c_noise_cond
    # said ln(1e-50)/4 = -28.8 (float) or -inf (tensor); float64 frames keep it
    frames = torch.rand(2, 3, 4, 4, generator=gen(3))
    with pytest.raises(ValueError, match=r"sigma must be > 0 in torch.float32 .* rounds to 0"):
        augment_previous_frames(frames, sigma=sigma)
    with pytest.raises(ValueError, match=r"sigma_sampler's σ must be > 0 in torch.float32"):
        augment_previous_frames(frames, sigma_sampler=lambda b, **kw: torch.full(
            (b,), 1e-50, dtype=torch.float64))
    out = augment_previous_frames(frames.double(), sigma=sigma)
    assert bool((out.sigma > 0).all()) and bool(out.c_noise_cond.isfinite().all())


def test_sigma_sampler_protocol_and_exclusive_arguments_are_named():
    # before: TypeError "<lambda>() got an unexpected keyword argument 'generator'" from the
    # call, and "not both" without saying what was given
    frames = torch.rand(2, 3, 4, 4, generator=gen(4))
    with pytest.raises(TypeError, match=r"sigma_sampler must accept \(batch_size, \*, "
                                        r"generator=None, device=None\)"):
        augment_previous_frames(frames, sigma_sampler=lambda b: torch.ones(b))
    with pytest.raises(ValueError, match=r"sigma and sigma_sampler are exclusive.*got sigma "
                                         r"of type float"):
        augment_previous_frames(frames, sigma=0.1, sigma_sampler=lambda b, **kw: None)
