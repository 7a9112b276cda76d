"""An outsider's checks of paths / schedules / conventions / oracles.

Three kinds of test:

* the original code run here on identical inputs (diffusers, k-diffusion, flow_matching;
  each skips when its package is missing);
* hypothesis property tests over the claimed input space: every path, every dtype (half
  precision works in float32), per-sample and per-frame levels in both layouts, B = 0, the
  ends of the level range;
* regression tests, one per defect found (each failed on the code before its fix).
"""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidnoise import schedules as S
from vidnoise.oracles import GaussianMixture, LinearGaussianAR
from vidnoise.paths import EDMPath, FlowPath, VPPath

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ----------------------------------------------------------------------------- originals
def _k_diffusion_karras():
    """k-diffusion's ``get_sigmas_karras`` and ``append_zero``, taken verbatim from the
    installed crowsonkb/k-diffusion ``k_diffusion/sampling.py`` (the package itself needs
    torchvision/torchsde to import, so only these two functions are compiled here)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.origin is None:
        pytest.skip("k-diffusion is not installed")
    src = Path(spec.origin).with_name("sampling.py").read_text()
    wanted = {"append_zero", "get_sigmas_karras"}
    body = [n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {n.name for n in body} == wanted
    ns = {"torch": torch}
    exec(compile(ast.Module(body=body, type_ignores=[]), "k_diffusion/sampling.py", "exec"), ns)
    return ns["get_sigmas_karras"]


@pytest.mark.parametrize("n", [1, 2, 3, 10, 37, 200])
@pytest.mark.parametrize("lo, hi, rho", [(0.002, 80.0, 7.0), (2e-3, 5.0, 7.0), (0.03, 14.6, 3.0),
                                         (1e-4, 1e3, 0.5)])
def test_karras_matches_k_diffusion(n, lo, hi, rho):
    ref_fn = _k_diffusion_karras()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # run the original in float64: an exact reference
    try:
        ref = ref_fn(n, lo, hi, rho)
    finally:
        torch.set_default_dtype(old)
    ours = S.karras(n, lo, hi, rho)
    # k-diffusion's n = 1 is linspace(0, 1, 1) = [0]: sigma_max, as ours
    if rho < 1.0 and n > 1:
        # k-diffusion's last value hi + (lo - hi) with hi = 1e6, lo = 1e-8 (rho = 0.5) keeps
        # only ~1e-10 of lo: its sigma_min is off by ~6e-4 relative; ours is exact
        assert ours[-2] == torch.tensor(lo, dtype=torch.float32)
        assert abs(float(ref[-2]) / lo - 1.0) > 1e-5
        ours, ref = ours[:-2], ref[:-2]
    # both are float64 values rounded once to float32: 2 ulp of float32
    torch.testing.assert_close(ours.double(), ref, rtol=2.5e-7, atol=1e-300)


def test_karras_matches_diffusers_edm_euler():
    diffusers = pytest.importorskip("diffusers")
    for n in (2, 5, 18, 40):
        sched = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, rho=7.0)
        sched.set_timesteps(n)
        # diffusers builds the ramp in float32: agree to a few float32 ulp of the largest value
        torch.testing.assert_close(S.karras(n, 0.002, 80.0), sched.sigmas.float(),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factor", [1.0, 3.0, 7.0, 0.4])
def test_shift_matches_diffusers_flowmatch(factor):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=factor)
    grid = np.linspace(1.0, 0.01, 25)
    sched.set_timesteps(sigmas=grid)  # diffusers shifts the given grid, then appends 0
    ours = S.shift(torch.tensor(grid), factor)
    # diffusers shifts in float32 (three roundings): 4 float32 ulp
    torch.testing.assert_close(ours.float(), sched.sigmas[:-1].float(), rtol=4.8e-7, atol=0.0)


@pytest.mark.parametrize("seq_len", [256, 1024, 4096, 9000])
def test_resolution_shift_matches_diffusers_flux(seq_len):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    mu = calculate_shift(seq_len)  # Flux defaults: 256, 4096, 0.5, 1.15
    assert S.resolution_shift_mu(seq_len) == pytest.approx(mu, rel=1e-12, abs=1e-12)
    sched = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    grid = np.linspace(1.0, 1.0 / 28, 28)
    sched.set_timesteps(sigmas=grid, mu=mu)
    ours = S.resolution_shift(torch.tensor(grid), seq_len)
    torch.testing.assert_close(ours.float(), sched.sigmas[:-1].float(), rtol=1e-6, atol=0.0)


def test_linear_quadratic_matches_diffusers_mochi():
    pytest.importorskip("diffusers")
    from diffusers.pipelines.mochi.pipeline_mochi import linear_quadratic_schedule

    for n, tau, lin in [(64, 0.025, None), (8, 0.1, 6), (50, 0.025, None), (3, 0.2, 1)]:
        ref = torch.tensor(linear_quadratic_schedule(n, tau, lin), dtype=torch.float64)
        ours = S.linear_quadratic(n, tau, lin)
        # diffusers drops the final 0; both round float64 values once to float32
        assert ours[-1] == 0.0 and ours.shape == (n + 1,)
        torch.testing.assert_close(ours[:-1].double(), ref.float().double(), rtol=0.0,
                                   atol=1.2e-7)


def test_trailing_timesteps_match_diffusers_ddim_for_every_n():
    """Equal to diffusers' trailing spacing for every n, except where diffusers' float
    ``np.arange(N, 0, -N/n)`` misrounds: at an exact half ``N - kN/n = j + 1/2`` it lands just
    beside it and rounds to the neighbour its error points at (ours rounds the exact value
    half to even: n = 48, 96, 112, ... differ in one or two steps by 1), and for some n
    (61, 103, 121, ...) it returns n + 1 steps (ours: always n)."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(timestep_spacing="trailing")
    path = VPPath()
    n_big = 1000
    equal = extra = 0
    for n in range(1, n_big + 1):
        ours = path.trailing_timesteps(n)
        assert ours.shape == (n,) and ours[0] == n_big - 1
        sched.set_timesteps(n)
        theirs = sched.timesteps.to(torch.int64)
        if theirs.shape != (n,):
            extra += 1
            continue
        equal += int(torch.equal(ours, theirs))
        for k in torch.nonzero(ours != theirs).reshape(-1).tolist():
            # exact value N - kN/n = (N n - k N) / n is a half-integer there
            assert (2 * (n_big * n - k * n_big)) % n == 0 and ((n_big * n - k * n_big) % n) != 0
            assert abs(int(theirs[k]) - int(ours[k])) == 1
    assert equal >= 850 and extra < 100  # most n agree bit for bit


@pytest.mark.parametrize("zero_snr", [False, True])
def test_vp_sigmas_match_diffusers_euler(zero_snr):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        timestep_spacing="trailing", rescale_betas_zero_snr=zero_snr,
    )
    path = VPPath(rescale_zero_terminal_snr=zero_snr)
    for n in (1, 4, 25, 50):
        sched.set_timesteps(n)
        # diffusers' alphas_cumprod is a float32 cumprod: relative error ~1e-6 at t = 999
        torch.testing.assert_close(S.vp_sigmas(n, path), sched.sigmas.float(), rtol=2e-5,
                                   atol=0.0)


def test_vp_velocity_matches_diffusers_get_velocity():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.CogVideoXDDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        snr_shift_scale=3.0, rescale_betas_zero_snr=True,
    )
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 2, 5, generator=g), torch.randn(4, 3, 2, 5, generator=g)
    t = torch.tensor([0, 311, 998, 999])
    path = VPPath.cogvideox()
    # diffusers builds abar in float32: agree to float32 rounding of O(1) values
    torch.testing.assert_close(path.velocity(x0, eps, t), sched.get_velocity(x0, eps, t),
                               rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(path.add_noise(x0, eps, t), sched.add_noise(x0, eps, t),
                               rtol=1e-5, atol=2e-6)


def _flow_matching():
    fm = pytest.importorskip("flow_matching")
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler, CosineScheduler

    del fm
    return AffineProbPath, CondOTScheduler, CosineScheduler


def _conversion_table(fm_path, t, x_t, x0, eps, fm_vel):
    """flow_matching's six conversions (facebookresearch/flow_matching,
    ``flow_matching/path/affine.py``: x_1 is the data, x_0 / epsilon the noise)."""
    return {
        "x0_from_velocity": fm_path.velocity_to_target(fm_vel, x_t, t),
        "noise_from_velocity": fm_path.velocity_to_epsilon(fm_vel, x_t, t),
        "x0_from_noise": fm_path.epsilon_to_target(eps, x_t, t),
        "noise_from_x0": fm_path.target_to_epsilon(x0, x_t, t),
        "velocity_from_x0": fm_path.target_to_velocity(x0, x_t, t),
        "velocity_from_noise": fm_path.epsilon_to_velocity(eps, x_t, t),
    }


def _check_against_flow_matching(ours, level, fm_path, t, scale, x0, eps):
    """``scale`` converts their velocity d x / d t into ours (d x / d level)."""
    x = ours.add_noise(x0, eps, level)
    sample = fm_path.sample(x_0=eps, x_1=x0, t=t)
    torch.testing.assert_close(x, sample.x_t, rtol=1e-12, atol=1e-12)
    v = sample.dx_t * scale
    second = {"x0_from_velocity": v, "noise_from_velocity": v, "x0_from_noise": eps,
              "noise_from_x0": x0, "velocity_from_x0": x0, "velocity_from_noise": eps}
    tb = t.reshape(-1, *([1] * (x.dim() - 1)))  # their conversions do not expand t
    for name, ref in _conversion_table(fm_path, tb, x, x0, eps, sample.dx_t).items():
        got = getattr(ours, name)(x, second[name], level)
        if name.startswith("velocity_from"):
            got = got / scale  # back to their d x / d t
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9, msg=name)


def test_flow_path_matches_flow_matching_cond_ot():
    AffineProbPath, CondOTScheduler, _ = _flow_matching()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 3, 4, dtype=torch.float64, generator=g)
    eps = torch.randn(5, 3, 4, dtype=torch.float64, generator=g)
    sigma = torch.tensor([0.03, 0.25, 0.5, 0.8, 0.97], dtype=torch.float64)
    # CondOT: x_t = t x_1 + (1 - t) x_0, so t = 1 - sigma and d x / d t = -v
    _check_against_flow_matching(FlowPath(), sigma, AffineProbPath(CondOTScheduler()),
                                 1.0 - sigma, -1.0, x0, eps)


def test_vp_path_matches_flow_matching_cosine():
    AffineProbPath, _, CosineScheduler = _flow_matching()
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(4, 6, dtype=torch.float64, generator=g)
    eps = torch.randn(4, 6, dtype=torch.float64, generator=g)
    path = VPPath()
    t_vp = torch.tensor([0, 100, 500, 999])
    phi = torch.arccos(path.alpha_bar[t_vp].sqrt())
    # Cosine: x_t = sin(pi t / 2) x_1 + cos(pi t / 2) x_0, so t = 1 - 2 phi / pi and
    # d x / d t = -(pi / 2) d x / d phi
    _check_against_flow_matching(path, t_vp, AffineProbPath(CosineScheduler()),
                                 1.0 - 2.0 * phi / math.pi, -2.0 / math.pi, x0, eps)


# ----------------------------------------------------------------------------- properties
def _level_for(kind, rng, b, frames, per_frame, end):
    shape = (b, frames) if per_frame else (b,)
    if kind == "vp":
        n = 1000
        if end == "low":
            return torch.zeros(shape, dtype=torch.int64)
        if end == "high":
            return torch.full(shape, n - 1, dtype=torch.int64)
        return torch.as_tensor(rng.integers(0, n, size=shape))
    top = 1.0 if kind == "flow" else 300.0
    if end == "low":
        return torch.zeros(shape, dtype=torch.float64)
    if end == "high":
        return torch.full(shape, top, dtype=torch.float64)
    if end == "tiny":
        return torch.full(shape, 1e-30, dtype=torch.float64)
    if end == "huge":  # EDM only (flow σ <= 1): 1e30·ε still fits float32 / bfloat16
        return torch.full(shape, 1e30 if kind == "edm" else top, dtype=torch.float64)
    return torch.as_tensor(rng.uniform(0.0, top, size=shape))


PATHS = {"flow": FlowPath(), "edm": EDMPath(), "vp": VPPath()}


def _coef64(path, level, layout, shape):
    """float64 (a, b, da, db) broadcastable against ``shape`` (from ``coefficients``)."""
    c = path.coefficients(level)
    view = [shape[0], 1, 1, 1, 1]
    if level.dim() == 2:
        view[2 if layout == "BCTHW" else 1] = level.shape[1]

    def shaped(v):
        return v.reshape(view) if isinstance(v, torch.Tensor) else v

    return tuple(shaped(v) for v in (c.a, c.b, c.da, c.db))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(PATHS)), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(["BCTHW", "BTCHW"]), per_frame=st.booleans(),
       b=st.integers(0, 3), end=st.sampled_from(["mid", "low", "high", "tiny", "huge"]),
       seed=st.integers(0, 2**31 - 1))
def test_every_dtype_is_the_float64_formula_rounded_once(kind, dtype, layout, per_frame, b, end,
                                                         seed):
    """add_noise / x0_from_velocity / noise_from_velocity in every dtype equal the float64
    formula on the same (rounded) inputs up to one rounding to ``dtype`` plus a few roundings
    of the working dtype (float32 for half inputs) on each term."""
    if end == "huge" and dtype == torch.float16:
        return  # 1e30 overflows float16 by design: the result is inf
    rng = np.random.default_rng(seed)
    path = PATHS[kind]
    frames = 3
    shape = (b, 2, frames, 2, 3) if layout == "BCTHW" else (b, frames, 2, 2, 3)
    level = _level_for(kind, rng, b, frames, per_frame, end)
    x0 = torch.as_tensor(rng.standard_normal(shape)).to(dtype)
    eps = torch.as_tensor(rng.standard_normal(shape)).to(dtype)
    a, bb, da, db = _coef64(path, level, layout, shape)
    work_eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    out_eps = torch.finfo(dtype).eps

    def check(got, c1, t1, c2, t2):
        assert got.dtype == dtype and got.shape == shape
        t1, t2 = t1.double(), t2.double()
        ref = c1 * t1 + c2 * t2
        tol = out_eps * ref.abs() + 4 * work_eps * ((c1 * t1).abs() + (c2 * t2).abs()) + 1e-300
        err = (got.double() - ref).abs()
        assert bool((err <= tol).all()), float((err - tol).max())

    x = path.add_noise(x0, eps, level, layout=layout)
    check(x, a, x0, bb, eps)
    v = path._velocity(x0, eps, level, layout).to(dtype)  # any v: the conversions are linear
    check(path.x0_from_velocity(x, v, level, layout=layout), db, x, -bb, v)
    check(path.noise_from_velocity(x, v, level, layout=layout), -da, x, a, v)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(PATHS)), seed=st.integers(0, 2**31 - 1),
       where=st.integers(0, 59), bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_data_propagates_only_where_it_is(kind, seed, where, bad):
    """Documented: non-finite data values propagate elementwise (no check, no mixing)."""
    rng = np.random.default_rng(seed)
    path = PATHS[kind]
    x0 = torch.as_tensor(rng.standard_normal((2, 2, 3, 5)))
    eps = torch.as_tensor(rng.standard_normal((2, 2, 3, 5)))
    level = torch.tensor([1, 500]) if kind == "vp" else torch.tensor([0.3, 0.7])
    x0.view(-1)[where] = bad
    x = path.add_noise(x0, eps, level)
    mask = torch.zeros(60, dtype=torch.bool)
    mask[where] = True
    assert not bool(torch.isfinite(x.view(-1)[mask]).any())
    assert bool(torch.isfinite(x.view(-1)[~mask]).all())


@pytest.mark.parametrize("kind", sorted(PATHS))
def test_meta_data_gives_a_shape_only_result_and_mixed_devices_are_named(kind):
    path = PATHS[kind]
    x0 = torch.empty(3, 2, 4, 5, 5, device="meta")
    level = torch.tensor([1, 2, 3]) if kind == "vp" else torch.tensor([0.1, 0.2, 0.3])
    per_frame = torch.ones(3, 4, dtype=torch.int64) if kind == "vp" else torch.rand(3, 4)
    for lvl in (level, per_frame):
        out = path.add_noise(x0, x0, lvl)
        assert out.is_meta and out.shape == x0.shape
    with pytest.raises(ValueError, match="one device.*x0 on cpu.*noise on meta"):
        path.add_noise(torch.zeros(3, 2), torch.zeros(3, 2, device="meta"), level)
    with pytest.raises(ValueError, match="is a meta tensor"):
        path.add_noise(torch.zeros(3, 2), torch.zeros(3, 2), level.to("meta"))


@pytest.mark.parametrize("kind", sorted(PATHS))
@pytest.mark.parametrize("bad", [torch.int32, torch.bool, torch.complex64])
def test_wrong_dtypes_name_the_argument(kind, bad):
    path = PATHS[kind]
    good = torch.zeros(2, 3)
    level = torch.tensor([1, 2]) if kind == "vp" else torch.tensor([0.1, 0.2])
    with pytest.raises((TypeError, ValueError), match=r"^x0 must .*(floating|real)"):
        path.add_noise(good.to(bad), good, level)
    if bad != torch.int32:  # an integer level is a valid level (VP index, flow/EDM value)
        with pytest.raises(TypeError, match=r"^(sigma|t) must be a real tensor, got dtype"):
            path.add_noise(good, good, level.to(bad))


# ----------------------------------------------------------------------------- regressions
@pytest.mark.parametrize("t", [5.0, torch.tensor([5.0, 6.0]), torch.tensor([0.5, 0.25])])
def test_vp_float_timestep_error_gives_the_fix(t):
    # before: "t must be an integer, got 5.0 (float)" with no way out named
    with pytest.raises(TypeError, match=r"^t must be .*integer.*t\.long\(\).*\(u \* 999\)"):
        VPPath().add_noise(torch.zeros(2, 3), torch.zeros(2, 3), t)
    with pytest.raises(TypeError, match=r"t\.long\(\)"):
        VPPath().edm_sigma(t)


def test_edm_denoiser_names_an_output_on_another_device_or_a_tuple():
    x = torch.randn(2, 3, 4, 5, 5)
    path = EDMPath()
    # before: RuntimeError "Tensor on device meta is not on the expected device cpu!"
    with pytest.raises(ValueError, match=r"network output must be on x's device cpu, got meta"):
        path.denoiser_from_network(lambda xi, c: torch.empty_like(xi, device="meta"))(x, 1.0)
    with pytest.raises(ValueError, match="return_dict=False"):
        path.denoiser_from_network(lambda xi, c: (xi,))(x, torch.tensor([1.0, 2.0]))


def _mixture(singular: bool) -> GaussianMixture:
    covs = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]] * 2) if singular else torch.eye(2).repeat(2, 1,
                                                                                              1)
    return GaussianMixture([1.0, 3.0], torch.tensor([[0.0, 0.0], [3.0, 1.0]]), covs)


@pytest.mark.parametrize("sigma", [1e150, 1e160, 1e200, 1e300])
def test_mixture_denoiser_at_huge_sigma_is_the_prior_mean(sigma):
    # before: nan for sigma >= ~1.3e154 (sigma² overflowed, every component got -inf)
    gm = _mixture(False)
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = gm.denoiser(x, sigma)
    torch.testing.assert_close(out, gm.mean.expand(3, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sigma", [1e-8, 1e-160, 1e-170, 1e-250, 1e-300])
def test_mixture_with_singular_covariance_at_tiny_sigma_is_the_data(sigma):
    # before: nan for sigma <= ~1e-162 (sigma² underflowed to 0 on the null direction)
    gm = _mixture(True)
    x = torch.tensor([[1.0, 0.0], [3.0, 1.0], [-2.0, 1.0]], dtype=torch.float64)  # on a support
    torch.testing.assert_close(gm.denoiser(x, sigma), x, rtol=1e-12, atol=1e-12)
    # off every support: the limit puts x on the nearest support (y = 0 or y = 1)
    off = torch.tensor([[1.0, 0.2], [3.0, 0.9]], dtype=torch.float64)
    torch.testing.assert_close(gm.denoiser(off, sigma),
                               torch.tensor([[1.0, 0.0], [3.0, 1.0]], dtype=torch.float64),
                               rtol=0.0, atol=1e-6)


@pytest.mark.parametrize("base_shift", [-720.0, -745.0, 710.0])
def test_resolution_shift_refuses_every_mu_beyond_the_documented_bound(base_shift):
    # before: mu in (-745.1, -709.78) passed with a subnormal factor (message and docs say
    # |mu| < 709.78 is required)
    with pytest.raises(ValueError, match=r"seq_len=256 gives mu=.*\|mu\| must stay below"):
        S.resolution_shift(0.5, 256, base_shift=base_shift, max_shift=0.0)
    assert S.resolution_shift(0.5, 256, base_shift=-709.0, max_shift=0.0) > 0.0


def test_mixture_posterior_mean_degenerate_paths():
    gm = _mixture(False)
    x = torch.randn(2, 2, dtype=torch.float64)
    # before: a = b = 0 returned ±inf silently
    with pytest.raises(ValueError, match="a and b must not both be 0"):
        gm.posterior_mean(0.0, 0.0, x)
    with pytest.raises(ValueError, match="row 1"):
        gm.posterior_mean(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.0]), x)
    # before: a = 0 with a tiny b gave nan; x carries nothing, so the prior mean
    torch.testing.assert_close(gm.posterior_mean(0.0, 1e-200, x), gm.mean.expand(2, 2))
    # before: a meta x was reported as "b is a meta tensor"
    with pytest.raises(ValueError, match=r"^x is a meta tensor"):
        gm.denoiser(x.to("meta"), 0.5)


def test_ar_posterior_mean_degenerate_paths_and_devices():
    ar = LinearGaussianAR(0.9, 0.1)
    x = torch.randn(2, 3, dtype=torch.float64)
    # before: ZeroDivisionError (floats) / inf (tensors)
    with pytest.raises(ValueError, match="a_path and b_path must not both be 0"):
        ar.posterior_mean(x, 0.0, 0.0, x)
    with pytest.raises(ValueError, match="a_path and b_path must not both be 0"):
        ar.posterior_mean(x, torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.5]), x)
    # A = 0 with a tiny B: the prior mean a·x_prev (before: nan from 0/0)
    torch.testing.assert_close(ar.posterior_mean(x, 0.0, 1e-200, x), 0.9 * x)
    tiny = torch.full((2,), 1e-200, dtype=torch.float64)
    torch.testing.assert_close(ar.posterior_mean(x, torch.zeros(2), tiny, x), 0.9 * x)
    if torch.cuda.is_available():  # before: RuntimeError from inside torch
        with pytest.raises(ValueError, match="x_prev must be on x's device"):
            ar.denoiser(x)(x.cuda(), 0.5)


def test_edm_offset_on_another_device_is_named():
    x = torch.zeros(2, 3, 4)
    # before: RuntimeError "Tensor on device meta is not on the expected device cpu!"
    with pytest.raises(ValueError, match=r"offset must be on x0's device cpu, got meta"):
        EDMPath(offset_noise=0.1).add_noise(x, x, 0.5, offset=torch.zeros(2, 3, device="meta"))


@pytest.mark.parametrize("where, value", [("means", math.nan), ("means", math.inf),
                                          ("covs", math.nan)])
def test_mixture_refuses_non_finite_parameters(where, value):
    means, covs = [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]]
    if where == "means":
        means = [[value, 0.0]]
    else:
        covs = [[[value, 0.0], [0.0, 1.0]]]
    # before: nan / inf means gave a nan denoiser silently; a nan cov said "must be symmetric"
    with pytest.raises(ValueError, match=rf"^{where} must be finite, got 1 non-finite"):
        GaussianMixture([1.0], means, covs)


def test_mixture_sample_refuses_an_integer_dtype():
    gm = _mixture(False)
    # before: samples silently truncated to int64
    with pytest.raises(ValueError, match=r"^dtype must be a floating dtype.*got torch.int64"):
        gm.sample(3, dtype=torch.int64)
    assert gm.sample(3, dtype=torch.float16).dtype == torch.float16


def test_vp_timestep_shape_error_says_int_not_float():
    # before: "t must be a float, a 0-d tensor or ..." for integer timesteps
    with pytest.raises(ValueError, match=r"^t must be an int, a 0-d tensor or a tensor of shape"):
        VPPath().sample(torch.zeros(2, 3), torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_edm_denoiser_matches_diffusers_edm_preconditioning(sigma_data):
    """D(x, σ) = c_skip·x + c_out·F(c_in·x, c_noise) against diffusers' EDMEulerScheduler
    ``precondition_inputs`` / ``precondition_noise`` / ``precondition_outputs``."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.EDMEulerScheduler(sigma_data=sigma_data)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 4, 5, 5, dtype=torch.float64, generator=g)
    w = torch.randn(2, 4, 5, 5, dtype=torch.float64, generator=g)

    def network(x_in, c_noise):  # any fixed function of both inputs
        return torch.tanh(x_in) * w + c_noise.reshape(-1, 1, 1, 1, 1)

    sigma = torch.tensor([0.002, 1.3, 80.0], dtype=torch.float64)
    ours = EDMPath(sigma_data=sigma_data).denoiser_from_network(network)(x, sigma)
    s = sigma.reshape(-1, 1, 1, 1, 1)
    f = network(sched.precondition_inputs(x, s), sched.precondition_noise(sigma))
    ref = sched.precondition_outputs(x, f, s)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 3), d=st.integers(1, 3), rank=st.integers(0, 3),
       seed=st.integers(0, 2**31 - 1), a=st.floats(0.0, 2.0), b=st.floats(1e-3, 10.0))
def test_mixture_posterior_mean_equals_a_dense_brute_force(k, d, rank, seed, a, b):
    """E[x0 | x] against dense float64 linear algebra (solve with A²C_k + B²I, multivariate
    normal log densities), covariances of any rank (singular ones included)."""
    gen = torch.Generator().manual_seed(seed)
    r = min(rank, d)
    factors = torch.randn(k, d, r, dtype=torch.float64, generator=gen)
    covs = factors @ factors.transpose(1, 2)
    means = 2.0 * torch.randn(k, d, dtype=torch.float64, generator=gen)
    weights = torch.rand(k, dtype=torch.float64, generator=gen) + 0.1
    gm = GaussianMixture(weights, means, covs)
    x = a * gm.sample(6, gen) + b * torch.randn(6, d, dtype=torch.float64, generator=gen)
    eye = torch.eye(d, dtype=torch.float64)
    logp, cond = [], []
    for j in range(k):
        cov_x = a * a * covs[j] + b * b * eye
        mvn = torch.distributions.MultivariateNormal(a * means[j], covariance_matrix=cov_x)
        logp.append(mvn.log_prob(x) + torch.log(gm.weights[j]))
        gain = a * covs[j] @ torch.linalg.inv(cov_x)
        cond.append(means[j] + (x - a * means[j]) @ gain.T)
    resp = torch.softmax(torch.stack(logp, 1), 1)
    ref = (resp[:, :, None] * torch.stack(cond, 1)).sum(1)
    torch.testing.assert_close(gm.posterior_mean(a, b, x), ref, rtol=1e-8, atol=1e-8)


def test_timestep_converters_match_diffusers_flowmatch_and_its_mochi_inversion():
    diffusers = pytest.importorskip("diffusers")
    from vidnoise import conventions as C

    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(12)
    torch.testing.assert_close(C.sigma_to_timestep(sched.sigmas[:-1]), sched.timesteps)
    torch.testing.assert_close(C.timestep_to_sigma(sched.timesteps), sched.sigmas[:-1])
    # diffusers runs Mochi with invert_sigmas=True: the timestep is N·(1 - σ) of our σ
    mochi = diffusers.FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
    grid = np.linspace(1.0, 0.02, 9)
    mochi.set_timesteps(sigmas=grid)
    torch.testing.assert_close(C.sigma_to_mochi_timestep(torch.tensor(grid)).float(),
                               mochi.timesteps.float(), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(C.mochi_timestep_to_sigma(mochi.timesteps.double()),
                               torch.tensor(grid), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sigma", [1e-170, 1e-200, 5e-324, 0.0])
def test_edm_loss_weight_at_tiny_sigma_is_inf_for_floats_as_for_tensors(sigma):
    # before: ZeroDivisionError for a float σ below ~1e-162 (σ² underflowed to 0)
    path = EDMPath()
    assert path.loss_weight(sigma) == math.inf
    assert float(path.loss_weight(torch.tensor([sigma], dtype=torch.float64))) == math.inf
    assert path.loss_weight(1e-150) == pytest.approx(4.0 + 1e300, rel=1e-15)


def _verbatim(module: str, file: str, name: str, **namespace):
    """One function compiled verbatim from an installed package's source file (without
    importing the package's heavy module)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        pytest.skip(f"{module} is not installed")
    src = Path(spec.origin).with_name(file).read_text()
    body = [n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(body) == 1
    exec(compile(ast.Module(body=body, type_ignores=[]), f"{module}/{file}", "exec"), namespace)
    return namespace[name]


@pytest.mark.parametrize("scale", [0.0, 0.81, 1.29, -0.5])
def test_mode_sampler_is_diffusers_mode_at_one_minus_u(scale, monkeypatch):
    """``sigma_samplers.mode`` at u equals diffusers' ``compute_density_for_timestep_sampling(
    "mode")`` (diffusers/training_utils.py) fed 1 - u: the same law, increasing in u."""
    ref_fn = _verbatim("diffusers", "training_utils.py", "compute_density_for_timestep_sampling",
                       math=math, torch=torch)
    from vidnoise import sigma_samplers
    from vidnoise.noise import rand

    u = rand((64,), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ours = sigma_samplers.mode(64, scale, generator=torch.Generator().manual_seed(9))
    monkeypatch.setattr(torch, "rand", lambda *a, **k: 1.0 - u)  # feed diffusers 1 - u
    ref = ref_fn("mode", 64, mode_scale=scale)
    torch.testing.assert_close(ours, ref.float(), rtol=0.0, atol=1.2e-7)


def test_ar_oracle_names_a_meta_x():
    ar = LinearGaussianAR(0.9, 0.1)
    x = torch.zeros(2, 3, device="meta")
    # before: velocity said "a_path is a meta tensor" (an internal name), denoiser gave meta
    with pytest.raises(ValueError, match=r"^x is a meta tensor"):
        ar.velocity(torch.zeros(2, 3))(x, 0.5)
    with pytest.raises(ValueError, match=r"^x_prev is a meta tensor"):
        ar.denoiser(x)(x, 0.5)
