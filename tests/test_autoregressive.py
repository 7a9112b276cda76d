"""rollout: the sliding window, conditioning noise (once per frame or DIAMOND's accumulating
re-noise), bad input; and the initial-noise study with LinearGaussianAR.

``python tests/test_autoregressive.py`` prints the study table used in docs/samplers.md.
"""

from __future__ import annotations

import math

import pytest
import torch

import vidnoise.samplers
from _sampler_helpers import karras
from vidnoise.oracles import LinearGaussianAR
from vidnoise.samplers import sample_edm
from vidnoise.samplers.autoregressive import rollout


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- public name
def test_public_name_is_the_function():
    from vidnoise.samplers import rollout as public

    assert public is rollout and vidnoise.samplers.rollout is rollout


# ----------------------------------------------------------------------------- window
def test_sliding_window_and_output_layout():
    # frames are constants; sample_next returns (sum of the window's frame values) + 1,
    # so the sequence is a K-term recurrence computed here on Python ints.
    b, c, h, w = 2, 1, 2, 2
    ctx = torch.stack([torch.full((b, c, h, w), float(v)) for v in (1, 2, 3)], dim=1)
    windows = []

    def sample_next(window):
        windows.append(window[0, :, 0, 0, 0].tolist())
        return window.sum(1) + 1.0

    out = rollout(sample_next, ctx, 4)
    seq = [1, 2, 3]
    for _ in range(4):
        seq.append(sum(seq[-3:]) + 1)
    assert out.shape == (b, 4, c, h, w)
    assert out[0, :, 0, 0, 0].tolist() == seq[3:]
    assert windows == [seq[i : i + 3] for i in range(4)]
    assert torch.all(out[1] == out[0])


def test_single_frame_context():
    ctx = torch.zeros(1, 1, 1, 1, 1)
    out = rollout(lambda wdw: wdw[:, -1] + 2.0, ctx, 3)
    assert out.flatten().tolist() == [2.0, 4.0, 6.0]


# ----------------------------------------------------------------------------- cond noise
def test_cond_noise_once_per_frame():
    # sample_next records window - clean window: one draw of σ_c·ε per generated frame.
    # 4000·4 samples per frame: the sample std of N(0, σ_c²) has relative standard error
    # 1/sqrt(2n) = 0.56%; bound 4 standard errors.
    sigma_c = 0.3
    ctx = torch.zeros(4000, 2, 1, 2, 2, dtype=torch.float64)
    seen = []

    def sample_next(window):
        seen.append(window.clone())
        return torch.zeros(4000, 1, 2, 2, dtype=torch.float64)  # clean frames stay 0

    rollout(sample_next, ctx, 3, cond_noise=sigma_c, generator=_gen(1))
    n = seen[0].numel()
    for wdw in seen:
        assert abs(float(wdw.std()) / sigma_c - 1) < 4 / math.sqrt(2 * n)
    assert not torch.equal(seen[0], seen[1])  # fresh noise per frame
    # no noise: the model sees the clean window exactly
    rollout(lambda wdw: seen.append(wdw) or wdw[:, -1], ctx, 1)
    assert torch.equal(seen[-1], ctx)


def test_accumulated_cond_noise_grows_with_the_step_index():
    # renoise(k) - window = σ_c·(ε_0 + ... + ε_k): std σ_c·sqrt(k+1), increments independent
    sigma_c = 0.2
    ctx = torch.zeros(5000, 1, 1, 2, 2, dtype=torch.float64)
    got = {}

    def sample_next(window, renoise):
        got["first"] = window
        got["steps"] = [renoise(k) for k in range(4)]
        got["again"] = renoise(2)
        return window[:, -1]

    rollout(sample_next, ctx, 1, cond_noise=sigma_c, accumulate_cond_noise=True,
            generator=_gen(2))
    steps = got["steps"]
    assert got["first"] is steps[0] and got["again"] is steps[2]
    n = steps[0].numel()
    for k, s in enumerate(steps):
        ratio = float(s.std()) / (sigma_c * math.sqrt(k + 1))
        assert abs(ratio - 1) < 4 / math.sqrt(2 * n), (k, ratio)
    inc = [steps[k + 1] - steps[k] for k in range(3)]
    for a_, b_ in zip(inc, inc[1:]):  # independent increments: correlation ~ N(0, 1/n)
        corr = float((a_ * b_).mean() / (a_.std() * b_.std()))
        assert abs(corr) < 4 / math.sqrt(n)


def test_progress_flag():
    pytest.importorskip("tqdm")
    out = rollout(lambda wdw: wdw[:, -1] + 1, torch.zeros(1, 1, 1, 1, 1), 2, progress=True)
    assert out.flatten().tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match="progress must be True or False"):
        rollout(lambda wdw: wdw[:, -1], torch.zeros(1, 1, 1, 1, 1), 1, progress=1)


def test_generator_reproducibility():
    ctx = torch.zeros(2, 1, 1, 2, 2)
    f = lambda wdw: wdw[:, -1] + 1
    a = rollout(f, ctx, 3, cond_noise=0.5, generator=_gen(3))
    b = rollout(f, ctx, 3, cond_noise=0.5, generator=_gen(3))
    c = rollout(f, ctx, 3, cond_noise=0.5, generator=_gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------- bad input
def test_bad_input():
    ctx = torch.zeros(1, 2, 1, 2, 2)
    ok = lambda wdw: wdw[:, -1]
    with pytest.raises(ValueError, match="n_frames must be >= 1"):
        rollout(ok, ctx, 0)
    with pytest.raises(ValueError, match="context must have 5 dims"):
        rollout(ok, torch.zeros(1, 2, 2, 2), 1)
    with pytest.raises(ValueError, match="context must hold K >= 1"):
        rollout(ok, torch.zeros(1, 0, 1, 2, 2), 1)
    with pytest.raises(ValueError, match="cond_noise must be in"):
        rollout(ok, ctx, 1, cond_noise=-0.1)
    with pytest.raises(ValueError, match=r"must return one frame of shape \(1, 1, 2, 2\)"):
        rollout(lambda wdw: wdw, ctx, 1)
    with pytest.raises(TypeError, match="n_frames must be an integer"):
        rollout(ok, ctx, 2.0)


# ----------------------------------------------------------------------------- the study
A_TRUE, Q_TRUE = 0.95, 0.1  # stationary variance q/(1-a²) = 1.0256
N_FRAMES = 200


def _denoiser_factory(ar: LinearGaussianAR, kind: str):
    """exact: the true conditional denoiser. leak: it lets 5% of the noisy input through,
    D + 0.05·(x - D) (residual noise of an imperfect network). bias: it believes the frames
    evolve with a 2% larger AR coefficient (a conditional-mean error)."""
    if kind == "exact":
        return ar.denoiser
    if kind == "leak":
        def leak(x_prev):
            d = ar.denoiser(x_prev)
            return lambda x, s: d(x, s) + 0.05 * (x - d(x, s))
        return leak
    if kind == "bias":
        return LinearGaussianAR(ar.a * 1.02, ar.q).denoiser
    raise ValueError(kind)


def linear_response(n_steps: int, init: str, kind: str):
    """With a linear denoiser and no churn, one sample_edm call is exactly
    ``x_next = α·x_prev + β·ε`` (ε the initial noise). α and β are read off by running the
    real sampler on the two basis inputs (x_prev, ε) = (1, 0) and (0, 1)."""
    ar = LinearGaussianAR(A_TRUE, Q_TRUE)
    grid = karras(n_steps, 2e-3, 5.0)  # DIAMOND: σ 2e-3..5, ρ 7 (+ final 0)
    x_prev = torch.tensor([1.0, 0.0], dtype=torch.float64)
    noise = torch.tensor([0.0, 1.0], dtype=torch.float64)
    out = sample_edm(_denoiser_factory(ar, kind)(x_prev), noise, grid, init=init)
    return float(out[0]), float(out[1])


def rollout_variance(alpha: float, beta: float, v0: float, n: int = N_FRAMES) -> float:
    """Var(x_n) for x_{t+1} = α x_t + β ε_t from Var(x_0) = v0: v ← α² v + β²."""
    v = v0
    for _ in range(n):
        v = alpha * alpha * v + beta * beta
    return v


def initial_noise_study():
    ar = LinearGaussianAR(A_TRUE, Q_TRUE)
    rows = []
    for n_steps in (1, 3):
        for kind in ("exact", "leak", "bias"):
            for init in ("sigma_max", "unit"):
                alpha, beta = linear_response(n_steps, init, kind)
                rows.append(dict(
                    steps=n_steps, denoiser=kind, init=init,
                    mean_gain=alpha, mean_err=alpha - ar.a,
                    var=beta * beta, var_err=beta * beta - ar.q,
                    var200=rollout_variance(alpha, beta, ar.stationary_var),
                ))
    return rows


def test_linear_response_matches_closed_form_one_step():
    # One Euler step from σ_0 = 5 to 0 returns D(x_init, 5) = a x_p + g (x_init - a x_p),
    # g = q/(q + 25): α = a(1 - g), β = g·5 (sigma_max) or g (unit).
    g = Q_TRUE / (Q_TRUE + 25.0)
    for init, scale in (("sigma_max", 5.0), ("unit", 1.0)):
        alpha, beta = linear_response(1, init, "exact")
        assert alpha == pytest.approx(A_TRUE * (1 - g), rel=1e-12)
        assert beta == pytest.approx(g * scale, rel=1e-12)


@pytest.mark.parametrize("init, kind", [("sigma_max", "leak"), ("unit", "exact")])
@pytest.mark.usefixtures("one_thread")
def test_study_numbers_match_a_monte_carlo_rollout(init, kind):
    # The exact numbers of the study against rollout() + sample_edm on 20000 independent
    # scalar chains started from the stationary law, 3 Euler steps, 200 frames. The sample
    # variance of n Gaussian values has relative standard error sqrt(2/n) = 1%: bound 4%.
    ar = LinearGaussianAR(A_TRUE, Q_TRUE)
    alpha, beta = linear_response(3, init, kind)
    expected = rollout_variance(alpha, beta, ar.stationary_var)
    n = 20000
    g = _gen(5)
    ctx = ar.sample_stationary((n, 1, 1, 1, 1), generator=g)
    grid = karras(3, 2e-3, 5.0)
    make = _denoiser_factory(ar, kind)

    def sample_next(window):
        x_prev = window[:, -1]
        noise = torch.randn(x_prev.shape, generator=g, dtype=torch.float64)
        return sample_edm(make(x_prev), noise, grid, init=init)

    frames = rollout(sample_next, ctx, N_FRAMES)
    var = float(frames[:, -1].var())
    assert abs(var / expected - 1) < 4 * math.sqrt(2 / n), (var, expected)


def test_study_claims():
    rows = {(r["steps"], r["denoiser"], r["init"]): r for r in initial_noise_study()}
    for steps in (1, 3):
        for kind in ("exact", "leak", "bias"):
            s, u = rows[(steps, kind, "sigma_max")], rows[(steps, kind, "unit")]
            # the init does not change the conditional mean (ε has mean 0) ...
            assert s["mean_gain"] == pytest.approx(u["mean_gain"], rel=1e-12)
            # ... only the variance, which "unit" shrinks, well below the true q
            assert u["var"] < s["var"] < Q_TRUE
            # linear in the initial noise: exactly σ_max² = 25 times less variance
            assert s["var"] / u["var"] == pytest.approx(25.0, rel=1e-9)
            assert u["var200"] < s["var200"] < ar_stationary()


def ar_stationary() -> float:
    return LinearGaussianAR(A_TRUE, Q_TRUE).stationary_var


if __name__ == "__main__":
    print(f"a = {A_TRUE}, q = {Q_TRUE}, stationary variance {ar_stationary():.4f}")
    print("| steps | denoiser | init | mean gain (true 0.95) | one-step var (true 0.1) "
          "| var after 200 frames (true 1.026) |")
    print("|---|---|---|---|---|---|")
    for r in initial_noise_study():
        print(f"| {r['steps']} | {r['denoiser']} | {r['init']} | {r['mean_gain']:.4f} "
              f"({r['mean_err']:+.4f}) | {r['var']:.5f} ({r['var_err']:+.4f}) "
              f"| {r['var200']:.4f} |")


def test_no_graph_by_default_and_grad_opt_in():
    w = torch.tensor(0.5, requires_grad=True)
    ctx = torch.ones(2, 3, 1, 2, 2)

    def sample_next(c):
        return w * c[:, -1] + 1.0  # frame_n = w·frame_{n-1} + 1

    out = rollout(sample_next, ctx, 3)
    assert out.grad_fn is None and not out.requires_grad
    out = rollout(sample_next, ctx, 3, grad=True)
    # frames 1.5, 1.75, 1.875; d(frame_3)/dw = f2 + w·(f1 + w·f0) = 1.75 + 0.5·(1.5 + 0.5) = 2.75
    (g,) = torch.autograd.grad(out[:, -1].mean(), w)
    assert abs(float(g) - 2.75) < 1e-6
    with pytest.raises(TypeError, match="grad must be True or False"):
        rollout(sample_next, ctx, 3, grad="yes")
