"""Tests of vidnoise.oracles.gaussian and proof test 3: the regression of training targets on
training inputs (what an L2-trained model learns) equals the exact stage velocity the
sampler uses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidnoise.oracles.gaussian import (
    GaussianData,
    exact_pyramid_model,
    exact_stage_velocity,
    powerlaw_cov,
    pyramid_operators,
)
from vidnoise.pyramid import PyramidSchedule

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


# ----------------------------------------------------------------------------- powerlaw_cov
@pytest.mark.parametrize("h, w, alpha", [(16, 16, 2.0), (8, 12, 1.0), (6, 6, 3.5)])
def test_powerlaw_cov_structure(h, w, alpha):
    C = powerlaw_cov(h, w, alpha)
    assert C.shape == (h * w, h * w) and C.dtype == F64
    torch.testing.assert_close(C, C.T, rtol=0, atol=0)
    torch.testing.assert_close(C.diagonal(), torch.ones(h * w, dtype=F64), rtol=0, atol=1e-12)
    # stationary on the torus: C[(i,j),(k,l)] depends on ((k-i) mod h, (l-j) mod w) only
    C4 = C.reshape(h, w, h, w)
    for i, j in [(1, 2), (h - 1, 0), (3, w - 1)]:
        shifted = torch.roll(C4[0, 0], shifts=(i, j), dims=(0, 1))
        torch.testing.assert_close(C4[i, j], shifted, rtol=0, atol=1e-12)
    # eigenvalues = the normalised spectrum (1 + |f|²)^(-alpha/2) · hw / Σ
    fy = torch.tensor([min(k, h - k) for k in range(h)], dtype=F64)
    fx = torch.tensor([min(k, w - k) for k in range(w)], dtype=F64)
    p = (1 + fy[:, None] ** 2 + fx[None, :] ** 2) ** (-alpha / 2)
    p = p * (h * w) / p.sum()
    ev = torch.linalg.eigvalsh(C)
    torch.testing.assert_close(ev.sort().values, p.reshape(-1).sort().values, rtol=1e-9,
                               atol=1e-12)
    # positive definite, smooth: neighbours positively correlated
    assert float(ev.min()) > 0
    assert float(C4[0, 0, 0, 1]) > 0.1


def test_powerlaw_cov_alpha0_is_white():
    torch.testing.assert_close(powerlaw_cov(4, 4, 0.0), torch.eye(16, dtype=F64), rtol=0,
                               atol=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        powerlaw_cov(4, 4, -1.0)
    with pytest.raises(ValueError, match="h"):
        powerlaw_cov(0, 4)


# ----------------------------------------------------------------------------- GaussianData
def test_gaussian_data_sample_statistics():
    C = powerlaw_cov(4, 4)
    mu = torch.linspace(-1, 1, 16, dtype=F64)
    data = GaussianData(mu, C)
    n = 40000
    x = data.sample(n, torch.Generator().manual_seed(0))
    assert x.shape == (n, 1, 4, 4) and x.dtype == F64
    flat = x.reshape(n, -1)
    # mean: SE = sqrt(C_ii / n) = 1/sqrt(n)
    assert float((flat.mean(0) - mu).abs().max()) < 5 / math.sqrt(n)
    emp = torch.cov(flat.T)
    # covariance entries: SE = sqrt((C_ij² + C_ii C_jj)/n) <= sqrt(2/n)
    assert float((emp - C).abs().max()) < 5 * math.sqrt(2 / n)
    y = data.sample(3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, x[:3])


def test_gaussian_data_singular_and_bad():
    v = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    data = GaussianData(None, v @ v.T, shape=(1, 2, 3))  # rank 2: PSD, singular
    x = data.sample(5, torch.Generator().manual_seed(1))
    assert x.shape == (5, 1, 2, 3) and bool(torch.isfinite(x).all())
    with pytest.raises(ValueError, match="cov"):
        GaussianData(None, -torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="cov"):
        GaussianData(None, torch.ones(4, 3))
    with pytest.raises(ValueError, match="mean"):
        GaussianData(torch.zeros(3), torch.eye(4))
    with pytest.raises(ValueError, match="shape"):
        GaussianData(None, torch.eye(6))


def test_posterior_mean_flow_path_closed_form():
    """Diagonal C, flow path x = (1-σ)x0 + σε: per coordinate
    E[x0|x] = μ + λ(1-σ)/((1-σ)²λ + σ²)·(x - (1-σ)μ)."""
    lam = torch.tensor([0.1, 1.0, 4.0, 25.0], dtype=F64)
    mu = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=F64)
    data = GaussianData(mu, torch.diag(lam), shape=(1, 2, 2))
    x = torch.randn(7, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    for sigma in (0.01, 0.3, 0.9, 1.0):
        A = (1 - sigma) * torch.eye(4, dtype=F64)
        B = sigma * torch.eye(4, dtype=F64)
        got = data.posterior_mean(A, B, x)
        want = mu + lam * (1 - sigma) / ((1 - sigma) ** 2 * lam + sigma**2) * (
            x - (1 - sigma) * mu)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # noise-free identity observation returns x itself
    torch.testing.assert_close(
        data.posterior_mean(torch.eye(4, dtype=F64), torch.zeros(4, 1, dtype=F64), x), x,
        rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- operators
@pytest.mark.parametrize("stages", [1, 2, 3])
def test_pyramid_operators_match_interpolate(stages):
    c, h, w = 2, 8, 16
    D, U = pyramid_operators((c, h, w), stages)
    x = torch.randn(3, c, h, w, dtype=F64, generator=torch.Generator().manual_seed(0))
    cur = x
    for k in range(stages - 1, -1, -1):
        torch.testing.assert_close((x.reshape(3, -1) @ D[k].T).reshape(cur.shape), cur,
                                   rtol=1e-12, atol=1e-12)
        if k:
            cur = F.interpolate(cur, scale_factor=0.5, mode="bilinear")
    for k in range(1, stages):
        f = 2 ** (stages - k)
        y = torch.randn(3, c, h // f, w // f, dtype=F64)
        up = F.interpolate(y, scale_factor=2, mode="nearest")
        torch.testing.assert_close((y.reshape(3, -1) @ U[k].T).reshape(up.shape), up)
    # the noise pyramid rows 2^(K-1-k)·D[k] are orthonormal
    for k in range(stages):
        N = 2 ** (stages - 1 - k) * D[k]
        torch.testing.assert_close(N @ N.T, torch.eye(N.shape[0], dtype=F64), rtol=0,
                                   atol=1e-12)


# ----------------------------------------------------------------------------- stage velocity
def _joint_velocity(data, sch, k, r, x):
    """E[start - end | x_r = x] from GaussianData.posterior_mean on the joint vector
    z = (x0, ñ) with ñ = N_k ε ~ N(0, I): x_r = [A_r, b_r I] z, target = [A_T, b_T I] z."""
    K = sch.stages
    D, U = pyramid_operators(data.shape, K)
    s, e = sch.start_sigmas[k], sch.end_sigmas[k]
    d, dk = data.dim, D[k].shape[0]
    P = U[k] @ D[k - 1] if k else torch.zeros(dk, d, dtype=F64)
    A_r = r * (1 - s) * P + (1 - r) * (1 - e) * D[k]
    A_T = (1 - s) * P - (1 - e) * D[k]
    cov = torch.block_diag(data.cov, torch.eye(dk, dtype=F64))
    joint = GaussianData(torch.cat([data.mean, torch.zeros(dk, dtype=F64)]), cov,
                         shape=(1, 1, d + dk))
    Az = torch.cat([A_r, (r * s + (1 - r) * e) * torch.eye(dk, dtype=F64)], 1)
    Tz = torch.cat([A_T, (s - e) * torch.eye(dk, dtype=F64)], 1)
    z = joint.posterior_mean(Az, torch.zeros(dk, 1, dtype=F64), x.reshape(x.shape[0], -1))
    return z @ Tz.T


@pytest.mark.parametrize("k, r", [(0, 1.0), (0, 0.4), (1, 0.9), (1, 0.05), (2, 0.5), (2, 0.01)])
def test_exact_stage_velocity_matches_joint_posterior(k, r):
    C = powerlaw_cov(8, 8)
    mu = torch.linspace(-0.5, 0.5, 64, dtype=F64)
    data = GaussianData(mu, C)
    sch = PyramidSchedule()
    v = exact_stage_velocity(data, sch, k)
    f = 2 ** (2 - k)
    x = torch.randn(5, 1, 8 // f, 8 // f, dtype=F64, generator=torch.Generator().manual_seed(k))
    want = _joint_velocity(data, sch, k, r, x)
    torch.testing.assert_close(v(x, r).reshape(5, -1), want, rtol=1e-9, atol=1e-10)
    M, c = v.matrix(r)
    assert M.shape == (64 // f**2, 64 // f**2) and c.shape == (64 // f**2,)


def test_stage0_start_velocity_closed_form():
    """At r = 1 of stage 0, x = n_0 exactly, so E[n_0 - end | x] = (1-σ_e)·(x - D_0 μ)."""
    data = GaussianData(torch.linspace(0, 1, 64, dtype=F64), powerlaw_cov(8, 8))
    sch = PyramidSchedule()
    M, c = exact_stage_velocity(data, sch, 0).matrix(1.0)
    e = sch.end_sigmas[0]
    D, _ = pyramid_operators(data.shape, 3)
    torch.testing.assert_close(M, (1 - e) * torch.eye(4, dtype=F64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, -(1 - e) * D[0] @ data.mean, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_exact_oracle_for_any_stage_count(stages):
    """PyramidSchedule(stages=K) with every default (it failed to build for K != 3): the
    exact stage velocity equals the joint posterior at each stage, and the exact model drives
    sample_pyramid to a finite sample of the right shape."""
    from vidnoise.samplers.pyramid import sample_pyramid

    size = 2 ** stages
    data = GaussianData(torch.linspace(-0.5, 0.5, size * size, dtype=F64),
                        powerlaw_cov(size, size))
    sch = PyramidSchedule(stages=stages)
    for k in range(stages):
        f = 2 ** (stages - 1 - k)
        x = torch.randn(3, 1, size // f, size // f, dtype=F64,
                        generator=torch.Generator().manual_seed(k))
        for r in (0.9, 0.2):
            want = _joint_velocity(data, sch, k, r, x)
            got = exact_stage_velocity(data, sch, k)(x, r)
            torch.testing.assert_close(got.reshape(3, -1), want, rtol=1e-9, atol=1e-10)
    out = sample_pyramid(exact_pyramid_model(data, sch), (2, 1, size, size), sch, 4,
                         generator=torch.Generator().manual_seed(0), dtype=F64)
    assert out.shape == (2, 1, size, size) and bool(torch.isfinite(out).all())


def test_exact_pyramid_model_uses_timestep():
    data = GaussianData(None, powerlaw_cov(8, 8))
    sch = PyramidSchedule()
    model = exact_pyramid_model(data, sch)
    x = torch.randn(2, 1, 4, 4, dtype=F64)
    t = torch.full((2,), float(sch.timestep_from_ratio(1, 0.3)), dtype=F64)
    torch.testing.assert_close(model(x, t, 1), exact_stage_velocity(data, sch, 1)(x, 0.3))


# ----------------------------------------------------------------------------- proof test 3
def _regression(noisy, target):
    """OLS K̂ = TᵀX (XᵀX)⁻¹ of target on noisy; returns (K̂, G = XᵀX)."""
    X = noisy.reshape(noisy.shape[0], -1)
    T = target.reshape(target.shape[0], -1)
    G = X.T @ X
    return torch.linalg.solve(G, X.T @ T).T, G


def _z_scores(K, G, M, R):
    """Given X, K̂ - M = Eᵀ X G⁻¹ with residual rows E ~ N(0, R) independent of X (jointly
    Gaussian, M the exact regression), so vec(K̂ - M) ~ N(0, G⁻¹ ⊗ R) exactly. Returns the
    entrywise z-scores (K̂ - M)_ij / sqrt(R_ii [G⁻¹]_jj), each exactly N(0, 1), and the
    whitened total Q = tr(R⁻¹ (K̂-M) G (K̂-M)ᵀ) ~ χ²(d²) as a z-score (Q - d²)/sqrt(2d²)."""
    D = K - M
    z = D / (R.diagonal()[:, None] * torch.linalg.inv(G).diagonal()[None, :]).sqrt()
    L = torch.linalg.cholesky(R)
    Y = torch.linalg.solve_triangular(L, D, upper=False)
    Q = float(((Y @ G) * Y).sum())
    m = D.numel()
    return z, (Q - m) / math.sqrt(2 * m)


@pytest.mark.parametrize("u", [0.3, 0.85])
def test_proof3_training_targets_regress_to_exact_velocity(u, capsys):
    """Proof test 3: regress training_inputs' target on its noisy input (fixed local ratio)
    over a large sample of Gaussian data; the linear regression equals exact_stage_velocity.
    The z-scores are exactly N(0, 1) and the whitened total exactly χ² under the claim; the
    same statistic against a velocity 10% off must fail (the test has power)."""
    h = w = 16
    C = powerlaw_cov(h, w)
    data = GaussianData(None, C)
    sch = PyramidSchedule()
    n = 12288  # samples per stage (>> 256 = largest stage dimension)
    x0 = data.sample(3 * n, torch.Generator().manual_seed(11))
    batches = sch.training_inputs(
        x0, stage_shares=(1, 1, 1), generator=torch.Generator().manual_seed(12),
        u_sampler=lambda m, **kw: torch.full((m,), u, dtype=F64))
    r = 1 - math.floor(u * 1000) / 1000
    rows = []
    for b in batches:
        assert float(b.ratio[0]) == pytest.approx(r, abs=1e-12)
        v = exact_stage_velocity(data, sch, b.stage)
        M, c = v.matrix(r)
        assert float(c.abs().max()) == 0.0
        # residual covariance R = Cov(T) - M Cov(x) Mᵀ, exact from the stage operators
        A_r, b_r, A_T, b_T = v.operators(r)
        eye = torch.eye(v.dim, dtype=F64)
        cov_x = A_r @ C @ A_r.T + b_r**2 * eye
        cov_t = A_T @ C @ A_T.T + b_T**2 * eye
        R = cov_t - M @ cov_x @ M.T
        K, G = _regression(b.noisy, b.target)
        z, q = _z_scores(K, G, M, R)
        _, q_wrong = _z_scores(K, G, 0.9 * M, R)  # a velocity 10% too small
        m = z.numel()
        # max of m N(0,1): P(max|z| > t) <= 2m·Φ(-t) ~ 1e-4 at the threshold below
        t = math.sqrt(2 * math.log(2 * m / 1e-4 / math.sqrt(2 * math.pi)))
        rows.append((b.stage, tuple(M.shape), float(z.abs().max()), t, q, q_wrong))
        assert float(z.abs().max()) < t
        assert abs(q) < 5  # χ²(d²) within 5 of its standard deviations
        assert q_wrong > 5  # ... and the same acceptance test rejects 0.9·M
    with capsys.disabled():
        print(f"\n[proof 3] u={u} (r={r:.3f}), n={n} per stage: OLS of target on noisy vs "
              "exact_stage_velocity")
        print("  stage  M shape     max|z_ij| (limit)   chi2 z-score   same vs 0.9·M")
        for k, shp, zmax, t, q, qw in rows:
            print(f"  {k:5d}  {str(shp):10s}  {zmax:6.2f}   ({t:4.2f})   {q:+12.2f}   {qw:+15.1f}")
