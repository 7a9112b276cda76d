"""sample_edm: Algorithm 2 step by step, churn, DIAMOND compatibility, init policies,
convergence order, sampled distribution, dtypes, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from _sampler_helpers import (
    MixtureProblems,
    k_diffusion_sampling,
    karras,
    loglog_slope,
    mean_error,
    mixture,
)
from vidnoise.oracles import GaussianMixture
from vidnoise.samplers import sample_edm

C2 = 0.64  # data variance of the Gaussian used for closed forms: x0 ~ N(0, C2·I)


def gauss_denoiser(x, sigma):
    """Exact denoiser of N(0, C2·I): D(x, σ) = C2/(C2 + σ²)·x."""
    s = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    return C2 / (C2 + s * s) * x


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- formulas
@pytest.mark.parametrize("order", [1, 2])
def test_deterministic_steps_match_scalar_recursion(order):
    # For D = C2/(C2+σ²)·x every step multiplies x by a scalar: d = x·σ/(C2+σ²),
    # Euler factor 1 + hσ/(C2+σ²); Heun adds the average with the slope at (x_e, σ').
    grid = karras(5, 0.01, 10.0)
    noise = torch.randn(3, 4, generator=_gen(), dtype=torch.float64)
    f = grid[0]  # init="sigma_max": x = σ_0·noise
    for s, sn in zip(grid[:-1], grid[1:]):
        h = sn - s
        k1 = s / (C2 + s * s)
        e = 1 + h * k1
        if order == 2 and sn > 0:
            k2 = e * sn / (C2 + sn * sn)
            e = 1 + h * (k1 + k2) / 2
        f *= e
    out = sample_edm(gauss_denoiser, noise, grid, order=order)
    torch.testing.assert_close(out, noise * f, rtol=1e-12, atol=0)


def test_ode_solution_is_exact_in_the_limit():
    # Probability-flow ODE for N(0, C2): x(σ) = x(σ_0)·sqrt(C2 + σ²)/sqrt(C2 + σ_0²).
    # Heun's global error is O(N^-2): measured 2.7e-5 relative at N = 400; doubling N must
    # cut it about 4x (the last step, Euler from 1e-3 to 0, adds only ~1e-6).
    noise = torch.randn(4, 3, generator=_gen(1), dtype=torch.float64)
    exact = noise * 5.0 * math.sqrt(C2) / math.sqrt(C2 + 25.0)
    errs = []
    for n in (400, 800):
        out = sample_edm(gauss_denoiser, noise, karras(n, 1e-3, 5.0), order=2)
        errs.append(float(((out - exact) / exact).abs().max()))
    assert errs[0] < 5e-5 and 3.0 < errs[0] / errs[1] < 5.0, errs


@pytest.mark.parametrize("s_churn, gamma", [(0.3, 0.3 / 2), (40.0, math.sqrt(2) - 1)])
def test_churn_step_formula(s_churn, gamma):
    # Two steps; the first with churn. γ = min(S_churn/N, √2-1) with N = 2;
    # x̂ = x + S_noise·sqrt(σ̂² - σ²)·ε, D called at σ̂ = σ(1+γ), x' = x̂ + (σ' - σ̂)(x̂ - D)/σ̂.
    grid = [2.0, 0.5, 0.0]
    s_noise = 1.007
    noise = torch.randn(2, 3, generator=_gen(2), dtype=torch.float64)
    seen = []

    def den(x, s):
        seen.append(float(s[0]))
        return gauss_denoiser(x, s)

    out = sample_edm(den, noise, grid, s_churn=s_churn, s_noise=s_noise, s_tmin=1.0,
                     generator=_gen(9))
    g = _gen(9)
    eps0 = torch.randn(2, 3, generator=g, dtype=torch.float64)
    eps1 = torch.randn(2, 3, generator=g, dtype=torch.float64)  # drawn, scaled by 0 (σ < s_tmin)
    del eps1
    sh = 2.0 * (1 + gamma)
    x = 2.0 * noise
    x_hat = x + s_noise * math.sqrt(sh * sh - 4.0) * eps0
    x = x_hat + (0.5 - sh) * (x_hat - C2 / (C2 + sh * sh) * x_hat) / sh
    x = x + (0.0 - 0.5) * (x - C2 / (C2 + 0.25) * x) / 0.5  # second step: γ = 0
    assert seen == pytest.approx([sh, 0.5], rel=1e-15)
    torch.testing.assert_close(out, x, rtol=1e-12, atol=0)


def _diamond_reference(den, noise, grid, order, s_churn, s_tmin, s_tmax, s_noise, g):
    """DIAMOND's sampler loop, written from its description (unit init, D at σ, d over σ̂,
    churn noise only when γ > 0), on Python floats."""
    n = len(grid) - 1
    gamma_ = min(s_churn / n, 2**0.5 - 1)
    x = noise.clone()
    b = noise.shape[0]
    for sigma, nxt in zip(grid[:-1], grid[1:]):
        gamma = gamma_ if s_tmin <= sigma <= s_tmax else 0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            eps = torch.randn(x.shape, generator=g, dtype=x.dtype) * s_noise
            x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
        denoised = den(x, torch.full((b,), sigma, dtype=x.dtype))
        d = (x - denoised) / sigma_hat
        dt = nxt - sigma_hat
        if order == 1 or nxt == 0:
            x = x + d * dt
        else:
            x2 = x + d * dt
            d2 = (x2 - den(x2, torch.full((b,), nxt, dtype=x.dtype))) / nxt
            x = x + (d + d2) / 2 * dt
    return x


@pytest.mark.parametrize("order", [1, 2])
def test_diamond_variant_reproduces_diamond_loop(order):
    grid = karras(6, 2e-3, 5.0)
    noise = torch.randn(2, 5, generator=_gen(3), dtype=torch.float64)
    kw = dict(s_churn=1.5, s_tmin=0.05, s_tmax=3.0, s_noise=1.003)
    ours = sample_edm(gauss_denoiser, noise, grid, order=order, init="unit",
                      variant="diamond", generator=_gen(4), **kw)
    ref = _diamond_reference(gauss_denoiser, noise, grid, order, g=_gen(4), **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    # and the EDM default differs from it (denoises at σ̂, draws on every step)
    edm = sample_edm(gauss_denoiser, noise, grid, order=order, init="unit",
                     generator=_gen(4), **kw)
    assert (edm - ref).abs().max() > 1e-3


def _draws_used(g_after: torch.Generator, seed: int, shape, max_draws=10) -> int:
    g = _gen(seed)
    for k in range(max_draws + 1):
        if torch.equal(g.get_state(), g_after.get_state()):
            return k
        torch.randn(shape, generator=g)
    raise AssertionError("generator advanced by an unexpected amount")


def test_churn_noise_draw_counts():
    grid = karras(5, 2e-3, 5.0)  # 5 steps; s_tmin = 0.1 leaves 3 steps with γ > 0
    in_window = sum(1 for s in grid[:-1] if 0.1 <= s)
    assert in_window == 3
    z = torch.zeros(2, 3)
    for compat, expected in ((False, 5), (True, 3)):
        g = _gen(5)
        sample_edm(gauss_denoiser, z, grid, s_churn=1.0, s_tmin=0.1, generator=g,
                   variant="diamond" if compat else "edm")
        assert _draws_used(g, 5, (2, 3)) == expected, compat
    g = _gen(5)
    sample_edm(gauss_denoiser, z, grid, generator=g)  # s_churn = 0: no draws at all
    assert _draws_used(g, 5, (2, 3)) == 0


def test_per_item_generators_make_items_independent_of_the_batch():
    grid = karras(4, 2e-3, 5.0)
    noise = torch.randn(3, 4, generator=_gen(6))
    gens = [_gen(10 + i) for i in range(3)]
    batch = sample_edm(gauss_denoiser, noise, grid, s_churn=2.0, generator=gens)
    for i in range(3):
        alone = sample_edm(gauss_denoiser, noise[i : i + 1], grid, s_churn=2.0,
                           generator=[_gen(10 + i)])
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- init policies
def test_init_policies_set_the_first_input():
    grid = [5.0, 1.0, 0.0]
    noise = torch.randn(2, 3, generator=_gen(7), dtype=torch.float64)
    prev = torch.full((2, 3), 0.25, dtype=torch.float64)
    for init, expected in (
        ("sigma_max", 5.0 * noise),
        ("unit", noise),
        (lambda z, s0: prev + s0 * z, prev + 5.0 * noise),
    ):
        first = []

        def den(x, s, first=first):
            first.append(x.clone())
            return torch.zeros_like(x)

        sample_edm(den, noise, grid, init=init)
        torch.testing.assert_close(first[0], expected, rtol=0, atol=0)


def test_unit_init_leaves_noise_std_sigma_next_over_sigma_max():
    # docs/math.md §8: from x = ε with data 0 (D = 0), one Euler step to σ' leaves std σ'/σ_0.
    grid = [5.0, 0.283, 0.0]
    noise = torch.randn(4000, 8, generator=_gen(8), dtype=torch.float64)
    states = []
    sample_edm(lambda x, s: torch.zeros_like(x), noise, grid, init="unit",
               callback=lambda d: states.append(d["x"]))
    torch.testing.assert_close(states[1], noise * 0.283 / 5.0, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- convergence
_NS = (16, 32, 64, 128)


@pytest.fixture(scope="module")
def edm_problems():
    return MixtureProblems(
        lambda gm, noise: sample_edm(gm.denoiser, noise, karras(2000, 2e-3, 80.0), order=2)
    )


@pytest.mark.parametrize("dim", [2, 64])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.usefixtures("one_thread")
def test_convergence_order(edm_problems, dim, order):
    # Karras grids (σ 80 → 2e-3, ρ 7) with N = 16..128 steps, fixed noise, exact mixture
    # denoiser, against a 2000-step Heun solution: slope -order within ±0.3.
    gm, noise, ref = edm_problems[dim]
    errs = [mean_error(sample_edm(gm.denoiser, noise, karras(n, 2e-3, 80.0), order=order), ref)
            for n in _NS]
    slope = loglog_slope(_NS, errs)
    assert abs(-slope - order) <= 0.3, (order, dim, slope, errs)


# ----------------------------------------------------------------------------- distribution
def _gaussian_4d():
    g = _gen(11)
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    cov = 0.2 * a @ a.T + 0.1 * torch.eye(4, dtype=torch.float64)
    mean = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    return GaussianMixture([1.0], mean[None], cov[None])


def _moment_z_scores(x, gm):
    """z-scores of the sample mean and covariance entries against the true ones.

    For n i.i.d. Gaussian samples, Var(mean_i) = C_ii/n and Var(S_ij) ≈ (C_ij² + C_ii C_jj)/n
    (Wishart); an exact sampler gives |z| < 4 on all 14 entries with probability > 0.999.
    The sampler's own discretisation bias at 64 Heun steps moves these z-scores by at most
    0.42 (measured against 512 steps on the same noise; at 32 steps it is 1.8, too much),
    so the bound tests the sampler's correctness, not its step count.
    """
    n = x.shape[0]
    c = gm.cov
    zm = (x.mean(0) - gm.mean) / (c.diagonal() / n).sqrt()
    s = torch.cov(x.T)
    var_s = (c * c + torch.outer(c.diagonal(), c.diagonal())) / n
    zc = (s - c) / var_s.sqrt()
    iu = torch.triu_indices(4, 4)
    return torch.cat([zm, zc[iu[0], iu[1]]])


@pytest.mark.parametrize("s_churn", [0.0, 10.0])
@pytest.mark.usefixtures("one_thread")
def test_sampled_distribution_matches_data(s_churn):
    gm = _gaussian_4d()
    noise = torch.randn(8000, 4, generator=_gen(12), dtype=torch.float64)
    # With churn, 64 steps also keep the SDE discretisation bias inside the bound (at 32
    # steps with s_churn = 10 the covariance is off by 6.5 standard errors: a step-count
    # effect of stochastic sampling, not a defect).
    grid = karras(64, 2e-3, 80.0)
    x = sample_edm(gm.denoiser, noise, grid, order=2, s_churn=s_churn, generator=_gen(13))
    z = _moment_z_scores(x, gm)
    assert z.abs().max() < 4.0, z
    # the same bound has power: unit init (too little initial noise) fails it
    x_unit = sample_edm(gm.denoiser, noise, grid, order=2, init="unit")
    assert _moment_z_scores(x_unit, gm).abs().max() > 4.0


# ----------------------------------------------------------------------------- dtypes
def test_half_precision_updates_in_float32():
    grid = [5.0, 2.0, 0.5, 0.0]
    noise = torch.randn(2, 8, generator=_gen(14))
    got_dtypes = set()

    def den(x, s):
        got_dtypes.add((x.dtype, s.dtype))
        return gauss_denoiser(x.float(), s).to(x.dtype)

    ref = sample_edm(gauss_denoiser, noise.double(), grid, order=2)
    for dt in (torch.float16, torch.bfloat16):
        out = sample_edm(den, noise.to(dt), grid, order=2)
        assert out.dtype == dt
        tol = 2e-2 if dt == torch.bfloat16 else 3e-3
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    assert got_dtypes == {(torch.float16, torch.float32), (torch.bfloat16, torch.float32)}


def test_deterministic_loop_traces_with_fullgraph():
    torch._dynamo.reset()
    grid = karras(4, 2e-3, 5.0)
    for order in (1, 2):
        fn = torch.compile(lambda z, o=order: sample_edm(gauss_denoiser, z, grid, order=o),
                           fullgraph=True, backend="eager")
        z = torch.randn(2, 3)
        torch.testing.assert_close(fn(z), sample_edm(gauss_denoiser, z, grid, order=order))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_syncs_on_cuda():
    # Every sampler loop under torch.cuda.set_sync_debug_mode("error"): any synchronising
    # call (.item(), .tolist(), a pageable host copy, a boolean mask) raises.
    from vidnoise.samplers import cfg, sample_flow

    dev = torch.device("cuda")
    noise = torch.randn(2, 4, 8, 8, device=dev)
    grid = karras(6, 2e-3, 5.0)
    fgrid = [1.0 - i / 6 for i in range(6)] + [0.0]
    gen = torch.Generator(device=dev).manual_seed(0)
    guided = cfg(lambda x, s: torch.tanh(x), lambda x, s: 0.5 * x, [3.0, 2.5, 2.0, 1.5, 1.2, 1.0],
                 sigmas=fgrid)

    def run():
        sample_edm(gauss_denoiser, noise, grid, order=2, s_churn=2.0, generator=gen)
        sample_edm(gauss_denoiser, noise.half(), grid, order=1, init="unit")
        for solver in ("euler", "heun", "midpoint"):
            sample_flow(guided, noise, fgrid, solver=solver)

    run()  # warm-up: lazy CUDA initialisation is not the samplers' doing
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "grid, match",
    [
        ([5.0, 5.0, 0.0], "strictly decreasing"),
        ([1.0, 2.0, 0.0], "strictly decreasing"),
        ([5.0, -1.0, 0.0], "finite values in"),
        ([5.0, 1.0], "end at 0"),
        ([5.0, math.inf, 0.0], "finite"),
    ],
)
def test_bad_grids(grid, match):
    with pytest.raises(ValueError, match="sigmas") as info:
        sample_edm(gauss_denoiser, torch.ones(1, 2), grid)
    assert info.match(match)


def test_progress_flag():
    pytest.importorskip("tqdm")
    z = torch.randn(2, 3, generator=_gen(15))
    grid = [5.0, 1.0, 0.0]
    a = sample_edm(gauss_denoiser, z, grid, progress=True)
    torch.testing.assert_close(a, sample_edm(gauss_denoiser, z, grid))


def test_bad_arguments():
    z = torch.ones(2, 3)
    grid = [5.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="init must be one of"):
        sample_edm(gauss_denoiser, z, grid, init="zeros")
    with pytest.raises(ValueError, match="init must return a tensor of the input's shape"):
        sample_edm(gauss_denoiser, z, grid, init=lambda n, s: n[:1] * s)
    with pytest.raises(ValueError, match="order must be one of"):
        sample_edm(gauss_denoiser, z, grid, order=3)
    with pytest.raises(ValueError, match="s_churn must be in"):
        sample_edm(gauss_denoiser, z, grid, s_churn=-1.0)
    with pytest.raises(ValueError, match="s_tmax must be in"):
        sample_edm(gauss_denoiser, z, grid, s_tmin=2.0, s_tmax=1.0)
    with pytest.raises(ValueError, match="one generator per item"):
        sample_edm(gauss_denoiser, z, grid, s_churn=1.0, generator=[_gen(0)])
    with pytest.raises(ValueError, match="denoiser must return a tensor of the input's shape"):
        sample_edm(lambda x, s: x.sum(), z, grid)



# ----------------------------------------------------------------------------- traps
def test_noise_scaled_by_sigma_max_is_refused_with_the_fix():
    # The k-diffusion habit sample_edm(D, noise * sigmas[0], sigmas) with init="sigma_max"
    # scaled the start twice: for data N(0, 0.46²) and σ_max = 80 the sample std came out
    # 0.46·80 ≈ 36.8 (reproduced below with init="unit" on the twice-scaled start).
    std = 0.46

    def den(x, sigma):  # exact denoiser of N(0, std²)
        s = sigma.reshape(-1, 1)
        return std**2 / (std**2 + s * s) * x

    grid = karras(32, 2e-3, 80.0)
    noise = torch.randn(4000, 4, generator=_gen(5), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"init='unit'") as info:
        sample_edm(den, noise * grid[0], grid)
    assert info.match("noise \\* sigmas\\[0\\]") and info.match("root mean square 79.8")
    twice = sample_edm(den, noise * grid[0] * grid[0], grid, init="unit", order=2)
    assert 30 < float(twice.std()) < 45  # the silent wrong result the check now prevents
    good = sample_edm(den, noise, grid, order=2)
    # the exact ODE map of N(0, std²) from x_T = σ_max·ε: x0 = std·σ_max·ε/sqrt(std² + σ_max²)
    exact = std * grid[0] / math.sqrt(std**2 + grid[0] ** 2) * noise
    # (Heun on 32 Karras steps: relative error below 2 %, against a factor 80 for the trap)
    torch.testing.assert_close(good, exact, rtol=0.02, atol=1e-3)
    # the fix the message names gives the same correct sample
    torch.testing.assert_close(sample_edm(den, noise * grid[0], grid, init="unit", order=2),
                               good)


@pytest.mark.parametrize("n", [1, 4, 64, 10_000])
def test_unit_noise_check_tolerance_follows_the_size(n):
    # n·mean(ε²) ~ χ²_n: the Laurent-Massart band (t = 21) holds unit noise except with
    # probability 2e-9, so 200 seeded draws pass; its edges, computed here, are crossed just
    # outside and not just inside; noise·σ_max with σ_max = 80 is caught at every n >= 1.
    grid = [80.0, 1.0, 0.0]
    for seed in range(200):
        z = torch.randn(n, generator=_gen(seed), dtype=torch.float64)
        sample_edm(gauss_denoiser, z, grid)
    hi = 1 + 2 * math.sqrt(21 / n) + 42 / n
    lo = 1 - 2 * math.sqrt(21 / n)
    for m in (hi * 0.999, max(lo, 0) * 1.001 + (1e-9 if lo <= 0 else 0)):
        sample_edm(gauss_denoiser, torch.full((n,), math.sqrt(m), dtype=torch.float64), grid)
    bad = [hi * 1.001] + ([lo * 0.999] if lo > 0 else [])
    for m in bad:
        with pytest.raises(ValueError, match="unit-variance"):
            sample_edm(gauss_denoiser, torch.full((n,), math.sqrt(m), dtype=torch.float64),
                       grid)
    with pytest.raises(ValueError, match="unit-variance"):
        sample_edm(gauss_denoiser, torch.full((n,), 80.0), grid)
    # not checked: B = 0, another device (meta: no value is read), init="unit" and callables
    sample_edm(gauss_denoiser, torch.ones(0, 3) * 80, grid)
    sample_edm(gauss_denoiser, torch.empty(2, 3, device="meta"), grid)
    sample_edm(gauss_denoiser, torch.full((n,), 80.0), grid, init="unit")
    sample_edm(gauss_denoiser, torch.full((n,), 80.0), grid, init=lambda z, s: z)


def test_no_graph_by_default_and_grad_opt_in():
    w = torch.tensor(0.64, requires_grad=True)

    def den(x, sigma):
        s = sigma.reshape(-1, 1)
        return w / (w + s * s) * x

    z = torch.randn(3, 2, generator=_gen(1))
    for order in (1, 2):
        out = sample_edm(den, z, karras(4, 2e-3, 5.0), order=order, s_churn=1.0,
                         generator=_gen(2))
        assert out.grad_fn is None and not out.requires_grad
        out = sample_edm(den, z, karras(4, 2e-3, 5.0), order=order, s_churn=1.0,
                         generator=_gen(2), grad=True)
        (g,) = torch.autograd.grad(out.sum(), w)
        eps = 1e-3
        runs = []
        for dw in (eps, -eps):
            def d2(x, sigma, c=0.64 + dw):
                s = sigma.reshape(-1, 1)
                return c / (c + s * s) * x
            runs.append(sample_edm(d2, z, karras(4, 2e-3, 5.0), order=order, s_churn=1.0,
                                   generator=_gen(2)).sum())
        torch.testing.assert_close(g, (runs[0] - runs[1]) / (2 * eps), rtol=2e-3, atol=1e-4)


def test_denoiser_outputs_device_dtype_and_tuple():
    z = torch.randn(2, 3, generator=_gen(3))
    grid = karras(3, 2e-3, 5.0)
    with pytest.raises(ValueError, match="denoiser must return a tensor on the input's device"):
        sample_edm(lambda x, s: torch.empty_like(x, device="meta"), z, grid)
    with pytest.raises(TypeError, match="return_dict=False"):
        sample_edm(lambda x, s: (gauss_denoiser(x, s),), z, grid)
    out = sample_edm(lambda x, s: gauss_denoiser(x, s).double(), z, grid, order=2)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, sample_edm(gauss_denoiser, z, grid, order=2))
    for dt in (torch.bool, torch.complex64):
        with pytest.raises(ValueError, match="noise must have a floating dtype"):
            sample_edm(gauss_denoiser, torch.ones(2, 3, dtype=dt), grid)
    with pytest.raises(ValueError, match="variant must be one of"):
        sample_edm(gauss_denoiser, z, grid, variant=True)

if __name__ == "__main__":  # the convergence table of docs/samplers.md
    torch.set_num_threads(1)
    probs = edm_problems.__wrapped__()
    for dim in (2, 64):
        for order in (1, 2):
            gm, noise, ref = probs[dim]
            errs = [mean_error(sample_edm(gm.denoiser, noise, karras(n, 2e-3, 80.0),
                                          order=order), ref) for n in _NS]
            print(f"| sample_edm | order={order} | {dim} | "
                  + " | ".join(f"{e:.2e}" for e in errs)
                  + f" | {loglog_slope(_NS, errs):.2f} |")


# ----------------------------------------------------------------------------- original code
_KD = k_diffusion_sampling()
_needs_kd = pytest.mark.skipif(_KD is None, reason="k-diffusion (and torchdiffeq) not installed: "
                                                   "its samplers are not compared")
_KD_CHURN = [dict(), dict(s_churn=2.0), dict(s_churn=40.0, s_noise=1.007),
             dict(s_churn=3.0, s_tmin=0.3, s_tmax=2.0, s_noise=0.9)]


def _mixture_denoiser():
    gm = mixture(6, seed=3)
    return lambda x, s: gm.denoiser(x, s)


@_needs_kd
@pytest.mark.parametrize("order, name", [(1, "sample_euler"), (2, "sample_heun")])
@pytest.mark.parametrize("kw", _KD_CHURN)
def test_equals_k_diffusion_euler_and_heun(order, name, kw):
    # k-diffusion's own sample_euler / sample_heun (its file, run here) on the same nonlinear
    # denoiser (a 4-component Gaussian mixture), grid and noise. k-diffusion takes the start
    # already scaled (noise·σ_0) and draws one torch.randn_like per step from the global RNG
    # whenever it runs; variant="edm" draws one per step once s_churn > 0, so the same seed
    # gives the same churn noise.
    den = _mixture_denoiser()
    grid = karras(7, 2e-3, 8.0)
    noise = torch.randn(5, 6, generator=_gen(11), dtype=torch.float64)
    torch.manual_seed(123)
    ref = getattr(_KD, name)(den, noise * grid[0], torch.tensor(grid, dtype=torch.float64),
                             disable=True, **kw)
    ours = sample_edm(den, noise, grid, order=order, generator=_gen(123), **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@_needs_kd
def test_k_diffusion_dpm_2_reaches_the_same_ode_solution():
    # sample_dpm_2 (a midpoint step in log σ) is a different second-order solver that
    # sample_edm does not provide; both must converge to the same ODE solution at order 2.
    # Data N(0, C2): the ODE keeps x/sqrt(C2 + σ²) constant, so from x = σ_0·ε the exact
    # endpoint is sqrt(C2/(C2 + σ_0²))·σ_0·ε. Errors at N = 8..64 steps fall by about 4x per
    # doubling for both (fitted slope < -1.7).
    noise = torch.randn(64, 6, generator=_gen(12), dtype=torch.float64)
    ns, e_kd, e_ours = (8, 16, 32, 64), [], []
    for n in ns:
        grid = karras(n, 2e-3, 8.0)
        exact = math.sqrt(C2 / (C2 + grid[0] ** 2)) * grid[0] * noise
        kd = _KD.sample_dpm_2(gauss_denoiser, noise * grid[0],
                              torch.tensor(grid, dtype=torch.float64), disable=True)
        e_kd.append(mean_error(kd, exact))
        e_ours.append(mean_error(sample_edm(gauss_denoiser, noise, grid, order=2), exact))
    assert loglog_slope(ns, e_kd) < -1.7 and loglog_slope(ns, e_ours) < -1.7, (e_kd, e_ours)


def _edm_reference_sampler(net, latents, t_steps, randn_like, S_churn=0.0, S_min=0.0,  # noqa: N803
                           S_max=math.inf, S_noise=1.0):
    """EDM Algorithm 2 as NVlabs/edm's generate.py ``edm_sampler`` runs it, restated here
    step by step (float64 state; one ``randn_like`` per step from a per-sample generator
    stack; the second-order correction on every step but the last; ``round_sigma`` is the
    identity of EDMPrecond). ``t_steps`` is the grid ending at 0."""
    num_steps = len(t_steps) - 1
    x_next = latents.to(torch.float64) * t_steps[0]
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
        t_hat = t_cur + gamma * t_cur
        x_hat = x_cur + math.sqrt(t_hat**2 - t_cur**2) * S_noise * randn_like(x_cur)
        denoised = net(x_hat, t_hat).to(torch.float64)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < num_steps - 1:
            denoised = net(x_next, t_next).to(torch.float64)
            d_prime = (x_next - denoised) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


@pytest.mark.parametrize("kw", [dict(), dict(S_churn=40.0, S_min=0.05, S_max=50.0,
                                              S_noise=1.003), dict(S_churn=5.0)])
def test_equals_nvlabs_edm_sampler_with_per_sample_generators(kw):
    # NVlabs/edm generate.py, edm_sampler (Algorithm 2) with its StackedRandomGenerator: one
    # generator per sample, randn_like = stack of per-sample draws. vidnoise with one
    # generator per item of dim 0 draws the same numbers; with 18 steps, σ in [0.002, 80].
    den = _mixture_denoiser()
    grid = karras(18, 0.002, 80.0)
    seeds = (5, 17, 99)
    latents = torch.stack([torch.randn(6, generator=_gen(s), dtype=torch.float64)
                           for s in seeds])
    stack = [_gen(1000 + s) for s in seeds]

    def randn_like(x):
        return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype)
                            for g in stack])

    def net(x, t):
        return den(x, torch.full((x.shape[0],), float(t), dtype=torch.float64))

    ref = _edm_reference_sampler(net, latents, grid, randn_like, **kw)
    ours = sample_edm(den, latents, grid, order=2, s_churn=kw.get("S_churn", 0.0),
                      s_tmin=kw.get("S_min", 0.0), s_tmax=kw.get("S_max", math.inf),
                      s_noise=kw.get("S_noise", 1.0), generator=[_gen(1000 + s) for s in seeds])
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
