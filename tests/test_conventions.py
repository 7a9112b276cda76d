"""Tests for vidnoise.conventions: exact values, round trips, agreement with the paths."""

import math

import numpy as np
import pytest
import torch

from vidnoise import conventions as C
from vidnoise.paths import EDMPath, FlowPath, VPPath
from vidnoise.schedules import shift

PAIRS = [
    # (forward, inverse, sample inputs of forward)
    (C.sigma_to_timestep, C.timestep_to_sigma, [0.0, 0.25, 0.5, 1.0]),
    (C.sigma_to_mochi_timestep, C.mochi_timestep_to_sigma, [0.0, 0.25, 0.5, 1.0]),
    (C.gamma_paper_to_code, C.gamma_code_to_paper, [-1 / 3, -0.1, 0.0]),
    (C.signal_level, C.sigma_from_signal_level, [0.0, 0.3, 1.0]),
    (C.flow_sigma_to_edm, C.edm_sigma_to_flow, [0.0, 0.2, 0.5, 0.9]),
    (C.alpha_bar_to_edm_sigma, C.edm_sigma_to_alpha_bar, [0.01, 0.2, 0.5, 1.0]),
    (C.velocity_to_mochi, C.mochi_to_velocity, [-2.0, 0.0, 3.5]),
]


@pytest.mark.parametrize("fwd, inv, values", PAIRS, ids=lambda f: getattr(f, "__name__", ""))
def test_round_trips_floats_and_tensors(fwd, inv, values):
    for v in values:
        out = inv(fwd(v))
        assert isinstance(out, float)
        assert out == pytest.approx(v, abs=1e-12)
    t = torch.tensor(values, dtype=torch.float64)
    back = inv(fwd(t))
    assert back.dtype == torch.float64
    torch.testing.assert_close(back, t, atol=1e-12, rtol=0)


def test_exact_values():
    assert C.sigma_to_timestep(0.25) == 250.0
    assert C.timestep_to_sigma(999.0) == pytest.approx(0.999)
    assert C.sigma_to_mochi_timestep(0.25) == 750.0  # reversed: t = 1000 (1 - sigma)
    assert C.sigma_to_mochi_timestep(1.0) == 0.0  # Mochi's t = 0 is pure noise
    assert C.mochi_timestep_to_sigma(1000.0) == 0.0
    assert C.sigma_to_timestep(0.5, num_train_timesteps=10) == 5.0
    assert C.gamma_code_to_paper(1 / 3) == -1 / 3
    assert C.gamma_paper_to_code(-1 / 3) == 1 / 3
    assert C.signal_level(0.2) == pytest.approx(0.8)
    assert C.flow_sigma_to_edm(0.5) == 1.0
    assert C.flow_sigma_to_edm(0.8) == pytest.approx(4.0)
    assert C.flow_sigma_to_edm(1.0) == math.inf
    assert C.edm_sigma_to_flow(math.inf) == 1.0
    assert C.edm_sigma_to_flow(3.0) == 0.75
    assert C.alpha_bar_to_edm_sigma(0.2) == pytest.approx(2.0)
    assert C.alpha_bar_to_edm_sigma(0.0) == math.inf
    assert C.edm_sigma_to_alpha_bar(2.0) == pytest.approx(0.2)
    assert C.edm_sigma_to_alpha_bar(math.inf) == 0.0
    assert C.alpha_bar_to_flow_sigma(0.5) == pytest.approx(0.5)
    assert C.alpha_bar_to_flow_sigma(0.0) == 1.0
    assert C.alpha_bar_to_flow_sigma(1.0) == 0.0
    assert C.velocity_to_mochi(1.5) == -1.5


def test_tensor_edge_values():
    s = torch.tensor([0.0, 1.0])
    torch.testing.assert_close(C.flow_sigma_to_edm(s), torch.tensor([0.0, math.inf]))
    e = torch.tensor([0.0, math.inf])
    torch.testing.assert_close(C.edm_sigma_to_flow(e), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(C.edm_sigma_to_alpha_bar(e), torch.tensor([1.0, 0.0]))
    ab = torch.tensor([0.0, 1.0])
    torch.testing.assert_close(C.alpha_bar_to_edm_sigma(ab), torch.tensor([math.inf, 0.0]))
    torch.testing.assert_close(C.alpha_bar_to_flow_sigma(ab), torch.tensor([1.0, 0.0]))
    empty = torch.zeros(0)
    assert C.sigma_to_timestep(empty).shape == (0,)


def test_mochi_target_is_x0_minus_eps():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    v = FlowPath().velocity(x0, eps)
    torch.testing.assert_close(C.velocity_to_mochi(v), x0 - eps)
    torch.testing.assert_close(C.mochi_to_velocity(x0 - eps), eps - x0)


def test_noise_level_maps_agree_with_the_paths():
    """Flow / VP samples rescaled are EDM samples at the converted sigma (same x0, eps)."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 2, 5, dtype=torch.float64, generator=g)
    eps = torch.randn(3, 2, 5, dtype=torch.float64, generator=g)
    sig = torch.tensor([0.1, 0.5, 0.95], dtype=torch.float64)
    x_flow = FlowPath().add_noise(x0, eps, sig)
    s_edm = C.flow_sigma_to_edm(sig)
    x_edm = EDMPath().add_noise(x0, eps, s_edm)
    torch.testing.assert_close(x_flow / (1 - sig)[:, None, None], x_edm)
    # back: x_edm / (1 + sigma_edm) is the flow sample at edm_sigma_to_flow
    torch.testing.assert_close(x_edm / (1 + s_edm)[:, None, None],
                               FlowPath().add_noise(x0, eps, C.edm_sigma_to_flow(s_edm)))
    vp = VPPath()
    t = torch.tensor([0, 500, 999])
    ab = vp.alpha_bar[t]
    x_vp = vp.add_noise(x0, eps, t)
    torch.testing.assert_close(x_vp / ab.sqrt()[:, None, None],
                               EDMPath().add_noise(x0, eps, C.alpha_bar_to_edm_sigma(ab)))
    scale = (ab.sqrt() + (1 - ab).sqrt())[:, None, None]
    torch.testing.assert_close(x_vp / scale,
                               FlowPath().add_noise(x0, eps, C.alpha_bar_to_flow_sigma(ab)))


def test_flow_shift_is_edm_scaling():
    sig = np.linspace(0.0, 0.99, 23)
    for s in (0.5, 3.0, 7.0):
        lhs = np.array([C.flow_sigma_to_edm(shift(float(x), s)) for x in sig])
        rhs = s * sig / (1 - sig)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_half_precision_keeps_dtype(dtype):
    s = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=dtype)
    ref = s.double()
    out = C.sigma_to_mochi_timestep(s)
    assert out.dtype == dtype
    torch.testing.assert_close(out, (1000 * (1 - ref)).to(dtype), atol=0, rtol=0)
    out = C.flow_sigma_to_edm(s[:-1])
    assert out.dtype == dtype
    torch.testing.assert_close(out, (ref[:-1] / (1 - ref[:-1])).to(dtype), atol=0, rtol=0)


def test_integer_tensors_give_float32():
    out = C.timestep_to_sigma(torch.tensor([0, 250, 1000]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([0.0, 0.25, 1.0]))


@pytest.mark.parametrize(
    "fn, arg, bad, words",
    [
        (C.sigma_to_timestep, "sigma", 1.5, "[0.0, 1.0]"),
        (C.sigma_to_timestep, "sigma", -0.1, "[0.0, 1.0]"),
        (C.sigma_to_timestep, "sigma", math.nan, "nan"),
        (C.timestep_to_sigma, "t", 1001.0, "[0.0, 1000.0]"),
        (C.mochi_timestep_to_sigma, "t", -1.0, "[0.0, 1000.0]"),
        (C.gamma_paper_to_code, "gamma_paper", 1 / 3, "[-inf, 0.0]"),
        (C.gamma_code_to_paper, "gamma_code", -1 / 3, "[0.0, inf]"),
        (C.signal_level, "sigma", 2.0, "[0.0, 1.0]"),
        (C.sigma_from_signal_level, "s", -0.5, "[0.0, 1.0]"),
        (C.edm_sigma_to_flow, "sigma", -1.0, "[0.0, inf]"),
        (C.alpha_bar_to_edm_sigma, "alpha_bar", 1.5, "[0.0, 1.0]"),
    ],
)
def test_bad_values_name_argument_and_range(fn, arg, bad, words):
    with pytest.raises(ValueError) as err:
        fn(bad)
    msg = str(err.value)
    assert arg in msg and words in msg
    if not math.isnan(bad):
        assert str(bad)[:5] in msg
    # CPU tensors are checked too
    with pytest.raises(ValueError, match=arg):
        fn(torch.tensor([0.0 if arg != "gamma_paper" else -0.1, bad]))


def test_bad_types():
    with pytest.raises(TypeError, match="sigma"):
        C.sigma_to_timestep("0.5")
    with pytest.raises(TypeError, match="sigma"):
        C.sigma_to_timestep(torch.tensor([True]))
    with pytest.raises(ValueError, match="num_train_timesteps"):
        C.sigma_to_timestep(0.5, num_train_timesteps=0)


# ----------------------------------------------------------------------------- trust pass
@pytest.mark.parametrize("fn", [C.sigma_to_timestep, C.sigma_to_mochi_timestep, C.signal_level,
                                C.flow_sigma_to_edm])
def test_flow_sigma_on_the_timestep_scale_points_at_the_converter(fn):
    with pytest.raises(ValueError, match=r"got 500.0.*conventions.timestep_to_sigma"):
        fn(500.0)
    with pytest.raises(ValueError, match=r"got 1000.0.*conventions.timestep_to_sigma"):
        fn(torch.tensor([0.5, 1000.0]))


def test_gamma_in_the_wrong_sign_points_at_the_converter():
    with pytest.raises(ValueError, match=r"gamma_code must be in \[0.0, inf\], got -0.333.*"
                                         r"paper sign.*conventions.gamma_paper_to_code"):
        C.gamma_code_to_paper(-1 / 3)
    with pytest.raises(ValueError, match=r"gamma_paper.*got 0.333.*already the code sign"):
        C.gamma_paper_to_code(torch.tensor([1 / 3]))


@pytest.mark.parametrize("fn", [C.sigma_to_timestep, C.timestep_to_sigma, C.flow_sigma_to_edm,
                                C.alpha_bar_to_edm_sigma, C.gamma_paper_to_code,
                                C.velocity_to_mochi, C.mochi_to_velocity, shift])
def test_meta_complex_and_bool_tensors_name_the_argument(fn):
    call = (lambda t: fn(t, 3.0)) if fn is shift else fn
    with pytest.raises(ValueError, match=r"^\w+ is a meta tensor"):
        call(torch.zeros(3, device="meta"))
    for dt in (torch.complex64, torch.bool):
        with pytest.raises(TypeError, match=rf"^\w+ must be a real tensor, got dtype {dt}"):
            call(torch.zeros(3, dtype=dt))
