"""sample_flow: formulas, convergence order, diffusers equivalence, dtypes, bad input."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from _sampler_helpers import (
    MixtureProblems,
    flow_velocity,
    gaussian_flow,
    linear,
    loglog_slope,
    mean_error,
)
from vidnoise.samplers import sample_flow

# ----------------------------------------------------------------------------- formulas
SOLVER_CASES = [("euler", "corrected"), ("heun", "corrected"), ("heun", "euler"),
                ("midpoint", "corrected")]


def _step_factor(solver, last_step, ch, last):
    """One step's factor for v = c·x with ch = c·h: Euler 1 + ch; Heun and midpoint
    1 + ch + ch²/2 (Heun with last_step="euler": 1 + ch on the step into σ' = 0)."""
    if solver == "euler" or (solver == "heun" and last_step == "euler" and last):
        return 1 + ch
    return 1 + ch + ch * ch / 2


@pytest.mark.parametrize("solver, last_step", SOLVER_CASES)
def test_linear_ode_matches_closed_form_step_products(solver, last_step):
    # v(x, σ) = c·x is linear; products of the step factors computed here on Python floats.
    c = 0.7
    grid = [1.0, 0.8, 0.55, 0.3, 0.1, 0.0]
    noise = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    factor = 1.0
    for s, s_next in zip(grid[:-1], grid[1:]):
        factor *= _step_factor(solver, last_step, c * (s_next - s), s_next == 0.0)
    out = sample_flow(lambda x, s: c * x, noise, grid, solver=solver, last_step=last_step)
    torch.testing.assert_close(out, noise * factor, rtol=1e-13, atol=0)


@pytest.mark.parametrize("solver, last_step", SOLVER_CASES)
def test_model_returning_its_input_is_safe_with_in_place_updates(solver, last_step):
    # v(x, σ) = x, returned as the very tensor the sampler passed in (an alias of its
    # working buffer): the result must still be the closed-form product of step factors.
    grid = [1.0, 0.6, 0.3, 0.0]
    factor = 1.0
    for s, s_next in zip(grid[:-1], grid[1:]):
        factor *= _step_factor(solver, last_step, s_next - s, s_next == 0.0)
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    kept = []
    out = sample_flow(lambda x, s: x, noise, grid, solver=solver, last_step=last_step,
                      callback=lambda d: kept.append(d["x"]))
    torch.testing.assert_close(out, noise * factor, rtol=1e-13, atol=0)
    torch.testing.assert_close(kept[0], noise, rtol=0, atol=0)  # callback got a copy


def test_euler_step_with_sigma_dependent_velocity():
    # v = x·σ + 1 (depends on σ): Euler by hand, one step at a time, on floats.
    grid = [0.9, 0.5, 0.0]
    x0 = 2.0
    x = x0
    for s, s_next in zip(grid[:-1], grid[1:]):
        x = x + (s_next - s) * (x * s + 1.0)
    out = sample_flow(lambda x, s: x * s[:, None] + 1.0, torch.full((2, 1), x0), grid)
    torch.testing.assert_close(out, torch.full((2, 1), x), rtol=1e-6, atol=0)


def test_model_sees_sigma_batch_and_call_counts():
    grid = [1.0, 0.75, 0.5, 0.25, 0.0]
    noise = torch.zeros(3, 2)
    for solver, last_step, expected in (
        ("euler", "corrected", [1.0, 0.75, 0.5, 0.25]),
        ("heun", "corrected", [1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0]),  # 2N calls
        ("heun", "euler", [1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25]),  # no final corrector
        ("midpoint", "corrected", [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]),
    ):
        seen = []

        def model(x, s, seen=seen):
            assert s.shape == (3,) and torch.all(s == s[0])
            seen.append(float(s[0]))
            return torch.zeros_like(x)

        sample_flow(model, noise, grid, solver=solver, last_step=last_step)
        assert seen == expected, (solver, last_step)


def test_callback_reports_state_before_update_and_denoised():
    grid = [1.0, 0.6, 0.2, 0.0]
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    # exact velocity of the one-point data x0: v = (x - x0)/σ, so denoised must equal x0
    records = []
    out = sample_flow(lambda x, s: (x - x0) / s[:, None], noise, grid, callback=records.append)
    assert [r["i"] for r in records] == [0, 1, 2]
    assert [r["sigma"] for r in records] == grid[:-1]
    assert [r["sigma_next"] for r in records] == grid[1:]
    torch.testing.assert_close(records[0]["x"], noise)
    for r in records:
        torch.testing.assert_close(r["denoised"], x0.expand(2, 3), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, x0.expand(2, 3), rtol=1e-12, atol=1e-12)


def test_does_not_modify_noise_and_accepts_tensor_grid():
    noise = torch.randn(2, 4)
    keep = noise.clone()
    a = sample_flow(lambda x, s: x, noise, torch.linspace(1, 0, 5))
    b = sample_flow(lambda x, s: x, noise, [1.0, 0.75, 0.5, 0.25, 0.0])
    torch.testing.assert_close(noise, keep, rtol=0, atol=0)
    torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- convergence
_NS = (16, 32, 64, 128)
_EXPECTED = {"euler": 1.0, "heun": 2.0, "midpoint": 2.0}


@pytest.fixture(scope="module")
def flow_problems():
    """Mixture, fixed noise and 2000-step Heun reference per dim, built on first use."""
    return MixtureProblems(
        lambda gm, noise: sample_flow(flow_velocity(gm), noise, linear(2000), solver="heun")
    )


@pytest.mark.parametrize("dim", [2, 64])
@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint"])
@pytest.mark.usefixtures("one_thread")
def test_convergence_order(flow_problems, dim, solver):
    # Fixed noise, exact mixture velocity, uniform grids N = 16..128 against a 2000-step
    # Heun reference: error ~ C·N^-p, fitted log-log slope -p within ±0.3 of 1 or 2.
    gm, noise, ref = flow_problems[dim]
    errs = [mean_error(sample_flow(flow_velocity(gm), noise, linear(n), solver=solver), ref)
            for n in _NS]
    slope = loglog_slope(_NS, errs)
    assert abs(-slope - _EXPECTED[solver]) <= 0.3, (solver, dim, slope, errs)


# ----------------------------------------------------------------------------- diffusers
def test_euler_equals_diffusers_flow_match_scheduler():
    diffusers = pytest.importorskip(
        "diffusers", reason="diffusers is not installed (dev extra): equivalence not checked"
    )
    sched = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    n = 12
    head = [1.0 - 0.9 * (i / n) ** 1.3 for i in range(n)]  # an uneven grid, N values
    sched.set_timesteps(sigmas=head)
    grid = sched.sigmas.tolist()  # the scheduler's own float32 grid, with its final 0
    assert len(grid) == n + 1 and grid[-1] == 0.0

    def velocity(x, sigma):  # any smooth nonlinear field of (x, σ)
        return torch.tanh(x) * (1.0 + sigma.reshape(-1, *([1] * (x.dim() - 1))))

    noise = torch.randn(2, 4, 3, 5, 5, generator=torch.Generator().manual_seed(3))
    x = noise.clone()
    for t, s in zip(sched.timesteps, grid[:-1]):
        v = velocity(x, torch.full((2,), s))
        x = sched.step(v, t, x, return_dict=False)[0]
    ours = sample_flow(velocity, noise, grid)
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- dtypes
def test_half_precision_accumulates_in_float32():
    # x starts at 1000 (float16 spacing there: 0.5); v = -1 over 1000 steps of 0.001 adds 1
    # in total. A float16 state would round every +0.001 away and stay at 1000; the float32
    # state reaches 1001, which float16 represents exactly.
    grid = [1.0 - i / 1000 for i in range(1000)] + [0.0]
    seen = set()

    def model(x, s):
        seen.add((x.dtype, s.dtype))
        return -torch.ones_like(x)

    for dt in (torch.float16, torch.bfloat16):
        out = sample_flow(model, torch.full((2, 3), 1000.0, dtype=dt), grid)
        assert out.dtype == dt
        expected = 1001.0 if dt == torch.float16 else 1000.0  # bf16 spacing at 1000 is 8
        assert torch.all(out.float() == expected), (dt, out)
    assert seen == {(torch.float16, torch.float32), (torch.bfloat16, torch.float32)}


def test_float64_stays_float64():
    out = sample_flow(lambda x, s: x, torch.ones(2, 2, dtype=torch.float64), [1.0, 0.0])
    assert out.dtype == torch.float64


# ----------------------------------------------------------------------------- sync-free
def test_whole_loop_traces_with_fullgraph():
    # dynamo raises on a graph break (.item(), .tolist(), a branch on a tensor value), so
    # fullgraph tracing of the whole sampler proves the loop is host-sync free.
    torch._dynamo.reset()
    grid = linear(6)
    model = lambda x, s: torch.tanh(x) - s[:, None]
    for solver in ("euler", "heun", "midpoint"):
        fn = torch.compile(lambda z, solver=solver: sample_flow(model, z, grid, solver=solver),
                           fullgraph=True, backend="eager")
        z = torch.randn(2, 3)
        torch.testing.assert_close(fn(z), sample_flow(model, z, grid, solver=solver))


# ----------------------------------------------------------------------------- progress
def test_progress_bar_and_missing_tqdm(monkeypatch, recwarn):
    pytest.importorskip("tqdm")
    out = sample_flow(lambda x, s: x, torch.ones(1, 2), [1.0, 0.5, 0.0], progress=True)
    assert out.shape == (1, 2)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import now raises ImportError
    with pytest.warns(UserWarning, match="tqdm"):
        out2 = sample_flow(lambda x, s: x, torch.ones(1, 2), [1.0, 0.5, 0.0], progress=True)
    torch.testing.assert_close(out, out2)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "grid, match",
    [
        ([1.0, 1.0, 0.0], "strictly decreasing"),
        ([0.5, 0.7, 0.0], "strictly decreasing"),
        ([1.0, 0.5, -0.1], r"\[0, 1.0\]"),
        ([1.5, 0.5, 0.0], r"\[0, 1.0\]"),
        ([1.0, 0.5, 0.1], "end at 0"),
        ([1.0], "at least 2"),
        ([1.0, math.nan, 0.0], "finite"),
        (torch.ones(2, 2), "1-D"),
    ],
)
def test_bad_grids(grid, match):
    with pytest.raises(ValueError, match="sigmas") as info:
        sample_flow(lambda x, s: x, torch.ones(1, 2), grid)
    assert info.match(match)


def test_bad_arguments():
    z = torch.ones(2, 3)
    with pytest.raises(ValueError, match="solver must be one of"):
        sample_flow(lambda x, s: x, z, [1.0, 0.0], solver="rk4")
    with pytest.raises(ValueError, match="last_step must be one of"):
        sample_flow(lambda x, s: x, z, [1.0, 0.0], solver="heun", last_step=False)
    with pytest.raises(ValueError, match="model must return a tensor of the input's shape"):
        sample_flow(lambda x, s: x[:1], z, [1.0, 0.0])
    with pytest.raises(TypeError, match="model must be a callable"):
        sample_flow(None, z, [1.0, 0.0])
    with pytest.raises(ValueError, match="noise must have a floating dtype"):
        sample_flow(lambda x, s: x, torch.ones(2, dtype=torch.int64), [1.0, 0.0])
    with pytest.raises(TypeError, match="sigmas must contain real numbers"):
        sample_flow(lambda x, s: x, z, [1.0, "0"])


# ----------------------------------------------------------------------------- last Heun step
def _shift3(n):
    """SD3's shift-3 grid on n equal steps: σ ↦ 3σ/(1 + 2σ) of linspace(1, 0, n + 1)."""
    return [3 * s / (1 + 2 * s) for s in (1 - i / n for i in range(n + 1))]


def test_heun_corrects_the_step_into_zero_against_the_exact_gaussian_flow():
    # Data N(0, 0.5²) per coordinate: the exact ODE endpoint of noise ε is 0.5·ε. The
    # default Heun corrects the last step (v(x, 0) = -x is defined for a flow model); the
    # Euler step into 0 it used to take costs an order of magnitude. Figures (max error over
    # 4096 x 8 draws): shift-3, 10 steps: corrected 3.6e-2, Euler-last 3.4e-1; linear, 37
    # steps: corrected 6.8e-4, Euler-last 2.5e-3. Bounds sit between the two with margin.
    noise = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = 0.5 * noise
    v = gaussian_flow(0.0, 0.5)
    for grid, bound in ((_shift3(10), 0.1), (linear(37), 1.2e-3)):
        default = float((sample_flow(v, noise, grid, solver="heun") - exact).abs().max())
        euler_last = sample_flow(v, noise, grid, solver="heun", last_step="euler")
        euler_last = float((euler_last - exact).abs().max())
        assert default < bound < euler_last, (len(grid), default, euler_last)
        assert euler_last > 3 * default


def test_heun_equals_flow_matching_heun2():
    # flow_matching integrates dx/dt = u(x, t) from noise at t = 0 to data at t = 1; with
    # t = 1 - σ its velocity is u(x, t) = -v(x, 1 - t) and its time grid is 1 - σ.
    fm = pytest.importorskip("flow_matching.solver",
                             reason="flow_matching is not installed: heun2 not compared")
    from flow_matching.utils import ModelWrapper

    v = gaussian_flow(0.3, 0.5)

    class U(ModelWrapper):
        def forward(self, x, t, **extras):
            return -v(x, (1.0 - t).expand(x.shape[0]))

    noise = torch.randn(64, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for grid in (_shift3(10), linear(37), [1.0, 0.4, 0.0]):
        times = torch.tensor([1.0 - s for s in grid], dtype=torch.float64)
        for method, solver in (("heun2", "heun"), ("midpoint", "midpoint"), ("euler", "euler")):
            ref = fm.ODESolver(U(None)).sample(noise, None, method=method, time_grid=times)
            ours = sample_flow(v, noise, grid, solver=solver)
            torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- model outputs
def test_model_output_on_another_device_raises():
    # a meta output used to leave the state unchanged (Euler returned its input)
    for solver in ("euler", "heun", "midpoint"):
        with pytest.raises(ValueError, match="model must return a tensor on the input's device"):
            sample_flow(lambda x, s: torch.empty_like(x, device="meta"), torch.ones(2, 3),
                        [1.0, 0.5, 0.0], solver=solver)


@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint"])
def test_model_output_of_another_dtype_is_cast(solver):
    # a float64 velocity for float32 noise: the result stays float32 (Heun used to return
    # float64) and equals the run with the velocity cast to float32 by the model itself.
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    out = sample_flow(lambda x, s: torch.tanh(x).double(), noise, linear(4), solver=solver)
    same = sample_flow(lambda x, s: torch.tanh(x), noise, linear(4), solver=solver)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, same, rtol=0, atol=0)


def test_model_returning_a_tuple_points_at_return_dict():
    with pytest.raises(TypeError, match="return_dict=False"):
        sample_flow(lambda x, s: (x,), torch.ones(2, 3), [1.0, 0.0])


def test_timestep_grid_points_at_the_converter():
    with pytest.raises(ValueError, match=r"conventions\.timestep_to_sigma"):
        sample_flow(lambda x, s: x, torch.ones(2, 3), [1000.0, 500.0, 0.0])
    with pytest.raises(ValueError, match=r"conventions\.timestep_to_sigma"):
        sample_flow(lambda x, s: x, torch.ones(2, 3), torch.linspace(999, 0, 5))


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64, torch.int32])
def test_non_real_floating_noise_is_named(dtype):
    with pytest.raises(ValueError, match="noise must have a floating dtype"):
        sample_flow(lambda x, s: x, torch.ones(2, 3, dtype=dtype), [1.0, 0.0])


def test_sigma_is_read_on_the_meta_device_too():
    # all on meta (model, noise): runs without reading a value; the result stays on meta
    out = sample_flow(lambda x, s: x * s[:, None], torch.empty(2, 3, device="meta"),
                      linear(3), solver="heun")
    assert out.device.type == "meta" and out.shape == (2, 3)


# ----------------------------------------------------------------------------- gradients
def test_no_graph_by_default_and_grad_opt_in():
    w = torch.tensor(0.7, requires_grad=True)
    eps = 1e-3
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(3))
    for solver in ("euler", "heun", "midpoint"):
        out = sample_flow(lambda x, s: w * x, noise, linear(3), solver=solver)
        assert not out.requires_grad and out.grad_fn is None, solver
        out = sample_flow(lambda x, s: w * x, noise, linear(3), solver=solver, grad=True)
        (g,) = torch.autograd.grad(out.sum(), w)
        # d/dw of Π(1 + w·h_i)·noise (Euler) etc.: check against a finite difference
        hi = sample_flow(lambda x, s: (w.detach() + eps) * x, noise, linear(3), solver=solver)
        lo = sample_flow(lambda x, s: (w.detach() - eps) * x, noise, linear(3), solver=solver)
        torch.testing.assert_close(g, (hi - lo).sum() / (2 * eps), rtol=1e-3, atol=1e-4)
    with pytest.raises(TypeError, match="grad must be True or False"):
        sample_flow(lambda x, s: x, noise, linear(3), grad=1)


if __name__ == "__main__":  # the convergence table of docs/samplers.md
    torch.set_num_threads(1)
    probs = flow_problems.__wrapped__()
    for dim in (2, 64):
        for solver in ("euler", "heun", "midpoint"):
            gm, noise, ref = probs[dim]
            errs = [mean_error(sample_flow(flow_velocity(gm), noise, linear(n), solver=solver), ref)
                    for n in _NS]
            print(f"| sample_flow | {solver} | {dim} | "
                  + " | ".join(f"{e:.2e}" for e in errs)
                  + f" | {loglog_slope(_NS, errs):.2f} |")
