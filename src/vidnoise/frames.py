"""Per-frame noise levels: a per-frame sampler, schedules as matrices, streaming generation.

Every schedule here is a matrix of noise levels, row = step, column = frame
(``docs/math.md §10``). ``sample_frames`` integrates the flow (or EDM) ODE with one σ per
frame: step ``i`` moves frame ``f`` from ``sigmas[i, f]`` to ``sigmas[i + 1, f]``; frames whose
level does not change are left bit for bit as they are and the model still sees them.

Schedules:

* :func:`diffusion_forcing_matrix` — Diffusion Forcing's pyramid (Chen et al. 2024,
  arXiv 2407.01392), as integer levels; :func:`level_sigmas` maps levels through any grid.
* :func:`skyreels_matrix` — SkyReels-V2's asynchronous schedule (diffusers
  ``SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix``).
* :func:`rolling_schedule`, :func:`fifo_schedule`, :func:`chunk_schedule` — periodic
  sliding-window schedules (Rolling Diffusion arXiv 2402.09470, FIFO-Diffusion arXiv
  2405.11473, chunk-wise generation as in Self-Forcing / CausVid / MAGI-1), as
  :class:`WindowSchedule`; ``.unroll(T)`` gives the full (S + 1, T) matrix and the model
  windows, :func:`stream_frames` runs one over an unbounded stream.
* :func:`history_guidance` — History-Guided Video Diffusion (arXiv 2502.06764): guidance whose
  unconditional branch sees the history frames fully noised.
* :func:`frame_sigmas` — Diffusion Forcing's training levels: independent per frame (or per
  chunk), with optional clean context frames; :func:`frame_training_sample` — the training
  input (``vidnoise.paths`` sample at those levels).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vidnoise._checks import (
    LAYOUTS,
    check_bool,
    check_callable,
    check_choice,
    check_float,
    check_floating_dtype,
    check_int,
    check_real_tensor,
    check_tensor,
    frame_axis,
    work_dtype,
)
from vidnoise.conventions import FLOW_SIGMA_HINT
from vidnoise.noise import as_generators, randn
from vidnoise.samplers._common import (
    check_state,
    model_output,
    progress_range,
    read_grid,
    to_device,
)
from vidnoise.samplers.guidance import combine, scale_plan

__all__ = [
    "sample_frames",
    "check_sigma_matrix",
    "diffusion_forcing_matrix",
    "level_sigmas",
    "SkyReelsSchedule",
    "skyreels_matrix",
    "WindowSchedule",
    "FramePlan",
    "rolling_schedule",
    "fifo_schedule",
    "chunk_schedule",
    "stream_frames",
    "history_guidance",
    "frame_sigmas",
    "frame_training_sample",
]

SOLVERS = ("euler", "heun")
LAST_STEPS = ("corrected", "euler")


# ----------------------------------------------------------------------------- checks
def _matrix(name: str, sigmas) -> Tensor:
    """A 2-D tensor or a sequence of rows as a float64 CPU tensor (one host copy)."""
    if isinstance(sigmas, Tensor):
        if sigmas.dim() != 2:
            raise ValueError(
                f"{name} must be a 2-D (S + 1, T) matrix (row = step, column = frame), got "
                f"shape {tuple(sigmas.shape)}"
            )
        if sigmas.dtype == torch.bool or sigmas.is_complex():
            raise TypeError(f"{name} must be a real matrix, got dtype {sigmas.dtype}")
        return sigmas.detach().to("cpu", torch.float64)
    if not isinstance(sigmas, Sequence) or isinstance(sigmas, str):
        raise TypeError(
            f"{name} must be a 2-D tensor or a sequence of rows, got {type(sigmas).__name__}"
        )
    rows = list(sigmas)
    if len(rows) < 2:
        raise ValueError(f"{name} must have at least 2 rows (a start and an end), got "
                         f"{len(rows)}")
    if all(type(r) is list for r in rows) and all(type(v) is float for r in rows for v in r):
        try:  # fast path: rows of Python floats
            return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), -1)
        except ValueError:
            pass  # ragged: the checks below name the row
    for i, row in enumerate(rows):
        if isinstance(row, Tensor):
            continue
        if not isinstance(row, Sequence) or isinstance(row, str):
            raise ValueError(f"{name} must be a 2-D (S + 1, T) matrix, got a row {i} of type "
                             f"{type(row).__name__}")
        if len(row) != len(rows[0]):
            raise ValueError(f"{name} rows must all have {len(rows[0])} values, row {i} has "
                             f"{len(row)}")
        for v in row:
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{name} must contain real numbers, got {v!r}")
    try:
        m = torch.tensor([r.tolist() if isinstance(r, Tensor) else r for r in rows],
                         dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a 2-D (S + 1, T) matrix of reals: {err}") from None
    if m.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (S + 1, T) matrix, got shape {tuple(m.shape)}")
    return m


def check_sigma_matrix(
    name: str, sigmas, num_frames: int | None = None, *, high: float | None = 1.0
) -> Tensor:
    """Read an (S + 1, T) σ matrix once to the host and check it; returns float64 (CPU).

    At least 2 rows; ``num_frames`` columns (when given); finite values in ``[0, high]``;
    every column non-increasing (a frame's level never goes up). Checked with whole-matrix
    tensor operations (a 1,000-frame matrix costs a few ms).
    """
    m = _matrix(name, sigmas)
    if m.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 rows (a start and an end), got "
                         f"{m.shape[0]}")
    if num_frames is not None and m.shape[1] != num_frames:
        raise ValueError(
            f"{name} must have one column per frame: {num_frames} frames, got a matrix with "
            f"{m.shape[1]} columns"
        )
    rng = f"[0, {high}]" if high is not None else "[0, inf)"
    bad = ~torch.isfinite(m) | (m < 0)
    if high is not None:
        bad |= m > high
    if bool(bad.any()):
        i, f = (int(v) for v in bad.nonzero()[0])
        hint = ""
        if high == 1.0 and bool((torch.isfinite(m) & (m >= 0)).all()):
            edm = ("EDM noise levels (x = x0 + σ·ε): pass edm=True with a denoiser model, or "
                   "convert them with vidnoise.conventions.edm_sigma_to_flow (σ/(1 + σ))")
            hint = (f"; {name} looks like timesteps on a 0..1000 scale: {FLOW_SIGMA_HINT}; or "
                    f"like {edm}" if bool((m <= 1000).all()) else f"; {name} looks like {edm}")
        raise ValueError(f"{name} must contain finite values in {rng}, got "
                         f"{name}[{i}, {f}] = {float(m[i, f])}{hint}")
    up = m[1:] > m[:-1]
    if bool(up.any()):
        i, f = (int(v) for v in up.nonzero()[0])
        raise ValueError(
            f"{name} must be non-increasing down every column (a frame's noise level never "
            f"rises), got {name}[{i}, {f}] = {float(m[i, f])} < {name}[{i + 1}, {f}] = "
            f"{float(m[i + 1, f])}"
        )
    return m


def _check_windows(windows, n_steps: int, num_frames: int, changed: Tensor) -> list[tuple]:
    """Normalise ``windows`` to one tuple of calls ``(a, b, ka, kb)`` per step."""
    if not isinstance(windows, Sequence) or isinstance(windows, str):
        raise TypeError(f"windows must be None or a sequence, got {type(windows).__name__}")
    if len(windows) != n_steps:
        raise ValueError(
            f"windows must have one entry per step (len(sigmas) - 1 = {n_steps}), got "
            f"{len(windows)}"
        )
    out, memo = [], {}
    for i, w in enumerate(windows):
        key = id(w)
        if key in memo and memo[key][0] is w:  # the same object repeated (unrolled cycles)
            norm = memo[key][1]
        else:
            calls = [w] if len(w) and isinstance(w[0], numbers.Integral) else list(w)
            norm = []
            for c in calls:
                c = tuple(check_int(f"windows[{i}]", v, minimum=0) for v in c)
                if len(c) == 2:
                    c = c + c
                if len(c) != 4:
                    raise ValueError(
                        f"windows[{i}] calls must be (start, end) or (start, end, keep_start, "
                        f"keep_end), got {c}"
                    )
                a, b, ka, kb = c
                if not (a <= ka < kb <= b <= num_frames):
                    raise ValueError(
                        f"windows[{i}] call {c} must satisfy start <= keep_start < keep_end <= "
                        f"end <= num_frames = {num_frames}"
                    )
                norm.append(c)
            norm = tuple(norm)
            memo[key] = (w, norm)
        left = changed[i].clone()
        for _, _, ka, kb in norm:
            left[ka:kb] = False
        if bool(left.any()):
            f = int(left.nonzero()[0, 0])
            raise ValueError(
                f"windows[{i}] leaves out frame {f}, whose level changes in step {i}: every "
                f"changing frame must be kept by a model call"
            )
        out.append(norm)
    return out


# ----------------------------------------------------------------------------- sampler
def sample_frames(
    model,
    noise: Tensor,
    sigmas,
    *,
    solver: str = "euler",
    layout: str = "BCTHW",
    edm: bool = False,
    last_step: str | None = None,
    windows=None,
    grad: bool = False,
    callback=None,
    progress: bool = False,
) -> Tensor:
    """Integrate the flow ODE with one noise level per frame (``docs/math.md §10``).

    Step ``i`` moves frame ``f`` from ``σ_f = sigmas[i, f]`` to ``σ'_f = sigmas[i + 1, f]``:

    * Euler: ``x_f ← x_f + (σ'_f - σ_f)·v_f(x, σ)``;
    * Heun: ``x̃ = x + h ⊙ v(x, σ)``, ``x_f ← x_f + h_f·(v_f(x, σ) + v_f(x̃, σ'))/2`` for every
      changing frame (``sample_flow``'s rule: a flow model's ``v(x, 0)`` is defined). With
      ``last_step="euler"`` and always with ``edm=True`` (``(x - D)/σ`` is undefined at 0, as
      in ``sample_edm``) frames reaching ``σ'_f = 0`` take the Euler value ``x̃_f`` instead,
      and the second call is skipped when every changing frame goes to 0.

    Frames with ``σ'_f = σ_f`` are not touched (bit for bit, whatever the model returns for
    them, NaN included) but are part of the model input. A step in which no frame changes
    calls nothing. With identical columns this is ``sample_flow`` (to float rounding).

    Args:
        model: ``model(x, sigma) -> v`` with ``x`` a 5-D video in ``layout`` (``noise``'s
            dtype) and ``sigma`` a (B, T) tensor (float32 for half precision input, else
            ``noise``'s dtype), one level per frame; returns the velocity ``ε - x0``
            (``edm=True``: the denoised ``x0``) of ``x``'s shape, on ``x``'s device (another
            dtype is cast to the working dtype; a tuple, e.g. a diffusers model without
            ``return_dict=False``, raises with that fix).
        noise: ``x`` at ``sigmas[0]``, (B, C, T, H, W) or (B, T, C, H, W).
        sigmas: (S + 1, T) matrix (tensor or rows of floats), columns non-increasing, values
            in [0, 1] (``edm=True``: in [0, inf)). Read once on the host. A flow matrix of
            timesteps on a 0..1000 scale is refused with the converter to use
            (:func:`vidnoise.conventions.timestep_to_sigma`).
        solver: ``"euler"`` or ``"heun"``.
        layout: ``"BCTHW"`` or ``"BTCHW"``.
        edm: EDM σ (noise std, ``x = x0 + σ·ε``) and a denoiser model:
            ``v_f = (x_f - D_f)/σ_f``.
        last_step: for ``solver="heun"``, the update of frames whose step ends at σ = 0:
            ``"corrected"`` (the flow default, as ``sample_flow``) or ``"euler"`` (one model
            call fewer where every changing frame reaches 0; order 1 on that step). None
            (default): ``"corrected"`` for flow, ``"euler"`` for ``edm=True``, which allows
            only ``"euler"``.
        windows: None (the model sees all frames every step) or one entry per step: a
            ``(start, end)`` frame range, or a sequence of calls ``(start, end, keep_start,
            keep_end)``: the model sees frames [start, end) and the outputs of
            [keep_start, keep_end) are used (FIFO partitions, lookahead, SkyReels' valid
            intervals). Every frame that changes level in a step must be kept by a call.
        grad: False (default) runs under ``torch.no_grad()`` (no step's activations are
            kept, as in the other samplers); True records the graph through every step.
        callback: called after each step's first model evaluation with ``dict(i=i, x=x (a
            copy), sigma=row i, sigma_next=row i + 1, denoised=x - σ ⊙ v)`` (rows as lists
            of floats; ``denoised`` is the model's x0 estimate, D itself for ``edm=True``).
        progress: show a tqdm bar.

    Returns:
        ``x`` at ``sigmas[-1]`` in ``noise``'s dtype (half precision is updated in float32).

    No ``.item()``, ``.tolist()`` or branch on tensor values in the loop: every coefficient,
    σ batch and frame mask is made on the host (float64) before it.
    """
    check_callable("model", model)
    check_tensor("noise", noise, ndims=(5,))
    check_state("noise", noise)  # the samplers' start check (finite values on the CPU)
    check_choice("layout", layout, LAYOUTS)
    euler_last = _solver_rule(solver, edm, last_step)
    check_bool("grad", grad)
    check_callable("callback", callback, optional=True)
    check_bool("progress", progress)
    ax = frame_axis(layout)
    t = noise.shape[ax]
    m = check_sigma_matrix("sigmas", sigmas, t, high=None if edm else 1.0)
    n = m.shape[0] - 1
    calls = None if windows is None else _check_windows(windows, n, t, m[1:] != m[:-1])
    with torch.set_grad_enabled(grad):
        return _run(model, noise, m, calls, solver, euler_last, ax, edm, callback, progress,
                    grad)


def _solver_rule(solver, edm, last_step) -> bool:
    """Check ``solver``, ``edm`` and ``last_step``; True when Heun takes the Euler value for
    frames reaching σ = 0."""
    check_choice("solver", solver, SOLVERS)
    check_bool("edm", edm)
    if last_step is None:
        return edm
    check_choice("last_step", last_step, LAST_STEPS)
    if edm and last_step == "corrected":
        raise ValueError(
            "last_step='corrected' needs the velocity at σ = 0, which an EDM denoiser does not "
            "give ((x - D)/σ is undefined there): use last_step='euler' or None with edm=True"
        )
    return last_step == "euler"


def _host_to(m: Tensor, dtype, device) -> Tensor:
    """A host tensor on ``device`` without a host sync (pinned, non-blocking on CUDA)."""
    host = m.to(dtype)
    device = torch.device(device)
    if device.type == "cpu":
        return host
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _run(model, noise, m, calls, solver, euler_last, ax, edm, callback, progress, grad,
         model_dtype=None):
    """The loop. ``model_dtype`` (streaming): the model sees that dtype while ``noise`` is
    already the working state (float32 for half precision), which is returned as is."""
    dtype = noise.dtype if model_dtype is None else model_dtype
    wdt = work_dtype(dtype)
    dev, batch, t = noise.device, noise.shape[0], noise.shape[ax]
    cast = dtype != wdt
    n = m.shape[0] - 1
    # σ batches (B, T) per row, all made once
    sig = list(_host_to(m, wdt, dev)[:, None, :].expand(n + 1, batch, t).unbind(0))
    view = [n + 1, 1, 1, 1, 1, 1]
    view[ax + 1] = t
    if callback is not None:  # σ per frame as a broadcastable view, for ``denoised``
        sig_x = _host_to(m, wdt, dev).reshape(view).unbind(0)
    if edm:  # 1/σ per frame, 0 at σ = 0 (those frames never change)
        inv = _host_to(torch.where(m > 0, 1.0 / m, 0.0), wdt, dev).reshape(view).unbind(0)
    # the per-step plan, from whole-matrix operations on the host
    h = m[1:] - m[:-1]
    ch = h != 0
    corr = ch & (m[1:] > 0) if euler_last else ch  # frames Heun corrects
    cnt = ch.sum(1)
    first = ch.to(torch.int8).argmax(1)
    last = t - 1 - ch.flip(1).to(torch.int8).argmax(1)
    same = (cnt == t) & (h == h[:, :1]).all(1)
    plan = []  # per step: None (nothing changes) or the host-made update plan
    for i, (c, a, b, cc, sm, h0) in enumerate(zip(
            cnt.tolist(), first.tolist(), last.tolist(), corr.sum(1).tolist(), same.tolist(),
            h[:, 0].tolist())):
        if not c:
            plan.append(None)
            continue
        b += 1
        p = dict(i=i, a=a, b=b, full=c == b - a, heun=solver == "heun" and cc > 0,
                 corr=cc == b - a)
        if sm:
            p["hs"] = h0  # every frame takes the same step: sample_flow's scalar update
        plan.append(p)
    tables = any(p is not None and ("hs" not in p or (p["heun"] and not p["corr"]))
                 for p in plan)
    if tables:  # per-frame coefficient and mask tables, made once
        view[0] = n
        h_t = _host_to(h, wdt, dev).reshape(view)
        h2_t = h_t / 2
        ch_t = _host_to(ch, torch.bool, dev).reshape(view)
        hm_t = _host_to(corr, torch.bool, dev).reshape(view)

    def sl(tab, p):
        return tab[p["i"]].narrow(ax, p["a"], p["b"] - p["a"])

    # per step: None (one call on all frames) or the calls (start, end, keep_start, keep_end)
    win = [None] * n if calls is None else [
        None if c == ((0, t, 0, t),) else c for c in calls]

    def velocity(x, i, row):  # v at σ = rows[row] (row i, or i + 1 for Heun), calls of step i
        xin = x.to(dtype) if cast else x
        if win[i] is None:  # checked (type, shape, device) and cast to the working dtype
            out = model_output("model", model(xin, sig[row]), x)
        else:
            out = torch.zeros_like(x)
            for a, b, ka, kb in win[i]:
                o = model_output("model", model(xin.narrow(ax, a, b - a), sig[row][:, a:b]),
                                 x.narrow(ax, a, b - a))
                out.narrow(ax, ka, kb - ka).copy_(o.narrow(ax, ka - a, kb - ka))
        return (x - out) * inv[row] if edm else out

    def euler(x, v, p, inplace):
        if "hs" in p:
            return x.add_(v, alpha=p["hs"]) if inplace else x.add(v, alpha=p["hs"])
        a, b = p["a"], p["b"]
        xs, vs = x.narrow(ax, a, b - a), v.narrow(ax, a, b - a)
        y = x if inplace else x.clone()
        if p["full"]:
            y.narrow(ax, a, b - a).addcmul_(vs, sl(h_t, p))
        else:  # unchanged frames inside the run: keep them bit for bit
            y.narrow(ax, a, b - a).copy_(
                torch.where(sl(ch_t, p), torch.addcmul(xs, vs, sl(h_t, p)), xs))
        return y

    x = noise.to(wdt, copy=True)
    for i in progress_range(n, progress, "sample_frames"):
        p = plan[i]
        if p is None:
            continue
        v = velocity(x, i, i)
        if callback is not None:
            callback(dict(i=i, x=x.clone(), sigma=m[i].tolist(), sigma_next=m[i + 1].tolist(),
                          denoised=x - sig_x[i] * v))
        if not p["heun"]:
            x = euler(x, v, p, not grad)  # grad: the model may have saved x, update a copy
            continue
        xe = euler(x, v, p, False)  # Euler predictor x̃
        v2 = velocity(xe, i, i + 1)
        if grad:
            x = x.clone()
        if "hs" in p and p["corr"]:
            x.add_(v + v2, alpha=p["hs"] / 2)  # x ← x + h·(v + v')/2
            continue
        a, b = p["a"], p["b"]
        xs = x.narrow(ax, a, b - a)
        vv = v.narrow(ax, a, b - a) + v2.narrow(ax, a, b - a)
        if p["full"] and p["corr"]:
            xs.addcmul_(vv, sl(h2_t, p))
        else:  # frames reaching 0 take x̃; unchanged frames keep x (x̃ = x there)
            xs.copy_(torch.where(sl(hm_t, p), torch.addcmul(xs, vv, sl(h2_t, p)),
                                 xe.narrow(ax, a, b - a)))
    return x.to(dtype) if cast and model_dtype is None else x


# ----------------------------------------------------------------------------- DF pyramid
def diffusion_forcing_matrix(num_frames: int, levels: int, *, uncertainty=1,
                             grid=None) -> Tensor:
    """Diffusion Forcing's pyramid schedule as integer levels (int64, (M, T)).

    ``L[m, t] = clip(K + floor(t·u) - m, 0, K)`` for rows ``m = 0 .. K + floor((T-1)·u)``,
    with K = ``levels`` (level K = pure noise, 0 = clean), T = ``num_frames``,
    u = ``uncertainty`` (Chen et al. 2024, arXiv 2407.01392, Algorithm 2's scheduling matrix;
    u = 0 is full-sequence diffusion, every frame at the same level). Row 0 is all noise, the
    last row all clean; map it to σ with :func:`level_sigmas`, or pass ``grid`` (K + 1
    decreasing values, ``grid[0]`` for level K) to get the σ matrix (float64) directly.
    ``floor(t·u)`` is taken on ``t·u`` computed exactly for an int u and as a Python float
    product otherwise.

    Built without arithmetic on the matrix: ``L[m, t] = g(floor(t·u) - m)`` with
    ``g(z) = clip(K + z, 0, K)`` is a Toeplitz matrix in (m, floor(t·u)), a strided view of
    one vector (flipped once), then its columns ``floor(t·u)`` are taken.
    """
    t = check_int("num_frames", num_frames, minimum=1)
    k = check_int("levels", levels, minimum=1)
    if isinstance(uncertainty, numbers.Integral) and not isinstance(uncertainty, bool):
        u = check_int("uncertainty", uncertainty, minimum=0)
    else:
        u = check_float("uncertainty", uncertainty, low=0.0)
    off = [math.floor(f * u) for f in range(t)]
    rows, top = k + off[-1] + 1, off[-1]
    z = torch.arange(-(rows - 1), top + 1, dtype=torch.int64)  # z = o - m
    vec = (k + z).clamp_(0, k)
    if grid is not None:
        g = _grid("grid", grid, high=None)
        if len(g) != k + 1:
            raise ValueError(f"grid must have levels + 1 = {k + 1} values, got {len(g)}")
        vec = torch.tensor(g[::-1], dtype=torch.float64)[vec]  # σ of level ℓ: grid[K - ℓ]
    # row i of unfold is vec[i : i + top + 1] = g(o - (rows - 1 - i)): rows in reverse
    mat = vec.unfold(0, top + 1, 1).flip(0)
    if off == list(range(t)):
        return mat
    return mat[:, torch.tensor(off, dtype=torch.int64)]


def level_sigmas(levels, grid) -> Tensor:
    """Map integer levels to σ through a decreasing grid: ``σ = grid[K - level]``.

    ``grid`` has K + 1 values from the noisiest (``grid[0]``, level K) to the cleanest
    (``grid[K]``, level 0; usually 0). ``levels``: an int tensor or nested lists of ints in
    [0, K]. Returns float64 of ``levels``' shape.
    """
    g = torch.tensor(_grid("grid", grid, high=None, end=None), dtype=torch.float64)
    lv = torch.as_tensor(levels).detach().cpu()
    if lv.is_floating_point() or lv.dtype == torch.bool:
        raise TypeError(f"levels must be integers, got dtype {lv.dtype}")
    k = g.numel() - 1
    if lv.numel():
        lo, hi = (int(v) for v in torch.aminmax(lv))
        if lo < 0 or hi > k:
            raise ValueError(
                f"levels must be in [0, K] = [0, {k}] for a grid of {k + 1} values, got values "
                f"in [{lo}, {hi}]"
            )
    return g.flip(0)[lv if lv.dtype == torch.int64 else lv.long()]  # grid[K - level]


# ----------------------------------------------------------------------------- SkyReels
@dataclass(frozen=True)
class SkyReelsSchedule:
    """SkyReels-V2's asynchronous diffusion-forcing schedule (see :func:`skyreels_matrix`).

    Attributes:
        step_matrix: (R, T) int64 model timestep of each frame at each iteration.
        step_index: (R, T) int64 number of updates a frame has had after the iteration
            (0 = not started, ``len(step_template)`` and above = clean).
        update_mask: (R, T) bool, frames updated in the iteration.
        valid_interval: per iteration, the [start, end) frame range the model sees.
        num_steps: ``len(step_template)``.
    """

    step_matrix: Tensor
    step_index: Tensor
    update_mask: Tensor
    valid_interval: tuple[tuple[int, int], ...]
    num_steps: int

    def sigmas(self, grid) -> Tensor:
        """The (R + 1, T) σ matrix for :func:`sample_frames`: row 0 the start, row r + 1 the
        levels after iteration r. A frame with ``k`` updates is at ``grid[min(k, N)]``
        (``grid``: the N + 1 σ values the N template timesteps step between, ``grid[N]``
        usually 0). Frames ready before the start (``num_pre_ready``) are at ``grid[N]``."""
        g = torch.tensor(_grid("grid", grid, high=None, end=None), dtype=torch.float64)
        if g.numel() != self.num_steps + 1:
            raise ValueError(
                f"grid must have num_steps + 1 = {self.num_steps + 1} values, got {g.numel()}"
            )
        first = self.step_index[0] - self.update_mask[0].long()  # before iteration 0
        idx = torch.cat([first[None], self.step_index]).clamp(0, self.num_steps)
        return g[idx]

    def windows(self) -> tuple[tuple[int, int], ...]:
        """The model windows per iteration, for ``sample_frames(windows=...)``."""
        return self.valid_interval


def skyreels_matrix(
    num_frames: int,
    step_template,
    base_num_frames: int,
    *,
    ar_step: int = 5,
    num_pre_ready: int = 0,
    causal_block_size: int = 1,
    shrink_interval_with_mask: bool = False,
) -> SkyReelsSchedule:
    """SkyReels-V2's asynchronous schedule, element for element diffusers'
    ``SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix`` (diffusers 0.42.1,
    ``pipelines/skyreels_v2/pipeline_skyreels_v2_diffusion_forcing.py``).

    Blocks of ``causal_block_size`` frames; ``N = len(step_template)``; each row (iteration)
    every block advances one step, except that block ``i > 0`` whose predecessor is not yet
    clean lags it by ``ar_step`` (``k_i = k_{i-1} - ar_step``, clipped to [0, N + 1]); rows
    stop when every block has had N updates. A block is updated where its count changed and
    is not N + 1. Model windows hold at most ``base_num_frames`` frames and end at the last
    block reached so far.

    ``shrink_interval_with_mask=True`` starts the window at the last block updated in the
    first iteration. diffusers 0.42.1 (and the SkyReels-V2 code it copies) overwrites its list
    of masks with the first mask there (``update_mask = update_mask[0]``), so it then loops
    over the first mask's elements and raises: ``TypeError`` from ``torch.stack`` on the 1-D
    mask, or ``IndexError`` indexing a 0-d element when the video is longer than the window.
    Here the first mask is read without overwriting the list, as intended; the matrices
    are unaffected and the intervals equal diffusers' with that one line fixed (tested).

    Raises ValueError when diffusers does (``ar_step`` below ``N / base blocks`` for a video
    longer than the model's window) and for frame counts that are not whole blocks.
    """
    t = check_int("num_frames", num_frames, minimum=1)
    cbs = check_int("causal_block_size", causal_block_size, minimum=1)
    base = check_int("base_num_frames", base_num_frames, minimum=cbs)
    ar = check_int("ar_step", ar_step, minimum=0)
    pre = check_int("num_pre_ready", num_pre_ready, minimum=0, maximum=t - 1)
    check_bool("shrink_interval_with_mask", shrink_interval_with_mask)
    tmpl = torch.as_tensor(step_template).detach().cpu()
    if tmpl.dim() != 1 or tmpl.numel() < 1:
        raise ValueError(f"step_template must be a non-empty 1-D sequence, got {tuple(tmpl.shape)}")
    if t % cbs or base % cbs:
        raise ValueError(
            f"num_frames ({t}) and base_num_frames ({base}) must be multiples of "
            f"causal_block_size ({cbs})"
        )
    n = tmpl.numel()
    blocks, base_blocks = t // cbs, base // cbs
    if base_blocks < blocks and ar < n / base_blocks:
        raise ValueError(
            f"ar_step must be at least {math.ceil(n / base_blocks)} for {blocks} blocks with a "
            f"{base_blocks}-block window and {n} steps, got ar_step = {ar}"
        )
    # Closed form of diffusers' row loop (k_i(r): updates of block i after row r, clipped to
    # [0, N + 1]): block i starts at row s_i and then advances one step a row,
    # k_i(r) = clip(r + 1 - s_i, 0, N + 1), with s_p = 0 for the first block p that is not
    # pre-ready and s_i = s_{i-1} + min(ar_step, N): it lags its predecessor by ar_step, or
    # starts when the predecessor is clean (row s_{i-1} + N) if that comes first. Rows run
    # until the last block has had N updates: R = s_last + N.
    ready = pre // cbs
    starts = [-(n + 2)] * ready + [i * min(ar, n) for i in range(blocks - ready)]
    rows = starts[-1] + n
    r = torch.arange(rows, dtype=torch.int64)[:, None]
    st = torch.tensor(starts, dtype=torch.int64)[None, :]
    idx_b = (r + 1 - st).clamp_(0, n + 1)  # block level, then copied to each frame
    mask_b = (r - st).clamp_(0, n + 1).ne_(idx_b).logical_and_(idx_b != n + 1)
    # block i is updated in rows s_i .. s_i + N - 1 (pre-ready blocks never)
    terminal = base_blocks
    if shrink_interval_with_mask:  # the last block updated in row 0
        terminal = max(i for i in range(blocks) if starts[i] == 0) + 1
    intervals = []
    for row in range(rows):
        if terminal < blocks and starts[terminal] <= row < starts[terminal] + n:
            terminal += 1
        intervals.append((max(terminal - base_blocks, 0) * cbs, terminal * cbs))
    ext = torch.tensor([999] + [int(v) for v in tmpl.long().tolist()] + [0], dtype=torch.int64)

    def frames(m):  # (R, blocks) -> (R, T): each block's column repeated over its frames
        return m if cbs == 1 else m.repeat_interleave(cbs, dim=1)

    steps, index, mask = frames(ext[idx_b]), frames(idx_b), frames(mask_b)
    return SkyReelsSchedule(steps, index, mask, tuple(intervals), n)


# ----------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class FramePlan:
    """A finite run: the (S + 1, T) σ matrix and the model calls per step
    (``windows[i]``: tuple of ``(start, end, keep_start, keep_end)``), for
    ``sample_frames(model, noise, plan.sigmas, windows=plan.windows)``."""

    sigmas: Tensor
    windows: tuple[tuple[tuple[int, int, int, int], ...], ...]


@dataclass(frozen=True)
class WindowSchedule:
    """A periodic sliding-window schedule (``docs/math.md §10``).

    The window holds ``W = len(levels[0])`` frames in blocks of ``stride``; one cycle is
    ``P = len(levels) - 1`` steps, in which window position ``p`` moves from ``levels[r][p]``
    to ``levels[r + 1][p]``. After the cycle the first block is clean and leaves, the others
    move up one block and a pure-noise block enters at the end:
    ``levels[P][:stride] == 0``, ``levels[P][stride:] == levels[0][:W - stride]``,
    ``levels[0][W - stride:] == sigma_max``.

    ``calls``: the model calls of every step, in window positions, as ``(start, end,
    keep_start, keep_end)`` (default: one call on the whole window).
    """

    levels: tuple[tuple[float, ...], ...]
    stride: int
    calls: tuple[tuple[int, int, int, int], ...]

    def __post_init__(self):
        w, p = len(self.levels[0]), len(self.levels) - 1
        s = self.stride
        if p < 1 or w < 1 or s < 1 or w % s:
            raise ValueError(
                f"levels must have >= 2 rows of W frames with W a multiple of stride, got "
                f"{p + 1} rows of {w}, stride {s}"
            )
        check_sigma_matrix("levels", [list(r) for r in self.levels], w, high=None)
        top = self.levels[0][w - 1]
        if any(v != 0.0 for v in self.levels[p][:s]):
            raise ValueError(f"levels[-1][:stride] must be 0 (the leaving block is clean), got "
                             f"{self.levels[p][:s]}")
        if tuple(self.levels[p][s:]) != tuple(self.levels[0][: w - s]):
            raise ValueError("levels[-1][stride:] must equal levels[0][:W - stride] (the window "
                             "moves up one block per cycle)")
        kept = set()
        for c in self.calls:
            if len(c) != 4 or not (0 <= c[0] <= c[2] < c[3] <= c[1] <= w):
                raise ValueError(f"calls must be (start, end, keep_start, keep_end) with "
                                 f"0 <= start <= keep_start < keep_end <= end <= W = {w}, got {c}")
            kept.update(range(c[2], c[3]))
        moving = {f for f in range(w) if self.levels[0][f] != self.levels[p][f]}
        if moving - kept:
            raise ValueError(f"calls must keep every window position whose level changes, "
                             f"missing {sorted(moving - kept)}")
        if any(v != top or v < max(max(r) for r in self.levels) for v in self.levels[0][w - s:]):
            raise ValueError("levels[0][W - stride:] must all be the largest level (the block "
                             "entering is pure noise)")

    @property
    def window(self) -> int:
        return len(self.levels[0])

    @property
    def steps_per_cycle(self) -> int:
        return len(self.levels) - 1

    @property
    def sigma_max(self) -> float:
        return self.levels[0][-1]

    def level(self, r: int, position: int) -> float:
        """Level of window position ``position`` at row ``r`` of a cycle (clean before the
        window, pure noise after it)."""
        if position < 0:
            return 0.0
        if position >= self.window:
            return self.sigma_max
        return self.levels[r][position]

    def unroll(self, num_frames: int) -> FramePlan:
        """The finite run over ``num_frames`` frames (a multiple of ``stride``), starting from
        pure noise: block ``b`` sits at window position ``b - c`` in cycle ``c``, cycles
        ``c = 1 - W/stride .. T/stride - 1``; the model sees the blocks that have entered and
        not left (fewer than W frames while the window fills and empties)."""
        t = check_int("num_frames", num_frames, minimum=1)
        s, nb, p = self.stride, self.window // self.stride, self.steps_per_cycle
        if t % s:
            raise ValueError(f"num_frames must be a multiple of stride = {s}, got {t}")
        blocks = t // s
        # Window position of frame f in cycle c is f - c·s; its level is tab[r][pos + 1]
        # (column 0: clean, before the window; column W + 1: pure noise, after it). With
        # i = blocks - c, pos = f + i·s - blocks·s: row i is vec[i·s : i·s + T] of one
        # vector per r, so the matrix is a strided view (unfold), flipped once to put the
        # cycles c = 1 - nb .. blocks in order (the last cycle gives the final row).
        tab = torch.tensor([[0.0, *row, self.sigma_max] for row in self.levels[:p]],
                           dtype=torch.float64)  # (P, W + 2)
        length = t + (blocks + nb - 1) * s
        k = torch.arange(length, dtype=torch.int64) - (blocks * s - 1)
        vec = tab[:, k.clamp_(0, self.window + 1)]  # (P, length)
        mat = vec.unfold(1, t, s).flip(1)  # (P, C + 1, T): cycle c = 1 - nb + row
        sig = mat[0] if p == 1 else mat.transpose(0, 1).reshape(-1, t)
        sig = sig[: (blocks + nb - 1) * p + 1]
        wins = []
        calls = self.calls
        for c in range(1 - nb, blocks):
            lo, hi = max(c, 0), min(c + nb, blocks)  # blocks in the window
            o = c * s
            if lo == c and hi == c + nb:  # the window is full: every call is inside it
                cyc = tuple((a + o, b + o, ka + o, kb + o) for a, b, ka, kb in calls)
            else:
                cyc = []
                for a, b, ka, kb in calls:
                    a2, b2 = max(a + o, lo * s), min(b + o, hi * s)
                    ka2, kb2 = max(ka + o, a2), min(kb + o, b2)
                    if ka2 < kb2:
                        cyc.append((a2, b2, ka2, kb2))
                cyc = tuple(cyc)
            wins.extend([cyc] * p)
        return FramePlan(sig, tuple(wins))


def _grid(name: str, grid, high=1.0, end=0.0) -> list[float]:
    return read_grid(name, grid, high=high, end=end)


def rolling_schedule(grid, window: int, *, edm: bool = False) -> WindowSchedule:
    """Rolling Diffusion's sliding window (arXiv 2402.09470): ``window`` frames at staggered
    levels; every ``P = S/window`` steps the window moves one frame.

    With a grid of S + 1 values (``grid[0]`` pure noise, ``grid[S] = 0``), position ``p``
    (0 = oldest) at row ``r`` of a cycle is at ``grid[S - (p + 1)·P + r]``: each frame
    spends ``window`` cycles in the window and goes through every grid step once.
    """
    g = _grid("grid", grid, high=None if edm else 1.0)
    w = check_int("window", window, minimum=1)
    s = len(g) - 1
    if s % w:
        raise ValueError(f"grid must have a multiple of window = {w} steps, got {s} steps")
    per = s // w
    levels = tuple(tuple(g[s - (p + 1) * per + r] for p in range(w)) for r in range(per + 1))
    return WindowSchedule(levels, 1, ((0, w, 0, w),))


def fifo_schedule(grid, frames_per_call: int, *, lookahead: bool = False,
                  edm: bool = False) -> WindowSchedule:
    """FIFO-Diffusion's queue (arXiv 2405.11473): a queue of ``S = f·n`` frames at the
    S levels of the grid (head = ``grid[S - 1]``, tail = ``grid[0]``, pure noise); every
    step moves each frame one level down (diagonal denoising), the head becomes clean and
    leaves, a pure-noise frame enters at the tail (:func:`stream_frames` draws it from the
    generator). The model sees n partitions of f = ``frames_per_call`` frames.

    ``lookahead=True`` (lookahead denoising, as in the FIFO-Diffusion code): the window also
    holds the last f/2 finished frames, clean, in front of the queue (W = S + f/2); the model
    is called on f frames at stride f/2 over the window (2n calls) and each call keeps the
    outputs of its later f/2 frames, so every queue frame is denoised with f/2 less noisy
    frames in front of it. (The original code shows those finished frames to the model at
    its smallest timestep; on a grid ending at 0 they are at σ = 0.) f must be even.
    """
    g = _grid("grid", grid, high=None if edm else 1.0)
    f = check_int("frames_per_call", frames_per_call, minimum=1)
    check_bool("lookahead", lookahead)
    s = len(g) - 1
    if s % f:
        raise ValueError(
            f"grid must have n·frames_per_call steps (the queue length), got {s} steps for "
            f"frames_per_call = {f}"
        )
    queue = (tuple(g[s - 1 - p] for p in range(s)), tuple(g[s - p] for p in range(s)))
    if not lookahead:
        calls = [(a, a + f, a, a + f) for a in range(0, s, f)]
        return WindowSchedule(queue, 1, tuple(calls))
    if f % 2:
        raise ValueError(f"frames_per_call must be even with lookahead, got {f}")
    h = f // 2
    levels = tuple((0.0,) * h + row for row in queue)  # f/2 finished frames in front
    calls = [(a, a + f, a + h, a + f) for a in range(0, s + h - f + 1, h)]
    return WindowSchedule(levels, 1, tuple(calls))


def chunk_schedule(steps, chunk: int, *, context: int = 0, shift: float | None = None,
                   edm: bool = False) -> WindowSchedule:
    """Chunk-wise generation (Self-Forcing, CausVid, MAGI-1): chunks of ``chunk`` frames
    denoised through the levels ``steps`` (then 0), with ``context`` clean frames before them
    in the window.

    ``steps``: the decreasing levels in (0, 1] (e.g. Self-Forcing's ``[1, .75, .5, .25]``,
    its timesteps 1000, 750, 500, 250 over 1000), warped through
    ``vidnoise.schedules.shift(σ, shift)`` when ``shift`` is given (Self-Forcing's
    ``warp_denoising_step`` with shift 5). ``context``: a multiple of ``chunk``.
    """
    c = check_int("chunk", chunk, minimum=1)
    ctx = check_int("context", context, minimum=0)
    if ctx % c:
        raise ValueError(f"context must be a multiple of chunk = {c}, got {ctx}")
    vals = list(steps.tolist() if isinstance(steps, Tensor) else steps) + [0.0]
    g = _grid("steps", vals, high=None if edm else 1.0)
    if shift is not None:
        from vidnoise.schedules import shift as _shift

        g = [_shift(v, shift) for v in g]
    levels = tuple(tuple([0.0] * ctx + [v] * c) for v in g)
    w = ctx + c
    return WindowSchedule(levels, c, ((0, w, 0, w),))


# ----------------------------------------------------------------------------- streaming
def stream_frames(
    model,
    schedule: WindowSchedule,
    frame_shape,
    *,
    num_frames: int | None = None,
    batch: int = 1,
    layout: str = "BCTHW",
    solver: str = "euler",
    edm: bool = False,
    last_step: str | None = None,
    generator=None,
    device=None,
    dtype=torch.float32,
    grad: bool = False,
) -> Iterator[Tensor]:
    """Run a :class:`WindowSchedule` over an unbounded stream; yields finished frames.

    The window holds at most ``schedule.window`` frames; each block of ``stride`` frames
    enters as pure noise ``σ_max·ε`` (EDM) or ``ε`` (flow), drawn with
    ``randn((batch, *block_shape), generator=generator)`` at the cycle it enters, is denoised
    by :func:`sample_frames` on the window, and is yielded, one frame at a time as a
    (B, C, H, W) tensor in ``dtype``, when it leaves the window (clean: its level is 0; with
    clean context frames that is after it has served as context). Equal to
    ``sample_frames`` on ``schedule.unroll(T)`` with the same noise (tested bit for bit).
    ``num_frames`` (a multiple of stride, at least the window) ends the stream; None runs
    forever. ``frame_shape`` is (C, H, W). With one generator per sample, each sample
    depends only on its own generator. The window is kept in the working dtype (float32 for
    half precision) between cycles, the model sees ``dtype``, so a half-precision stream also
    equals one ``sample_frames`` run on the same noise bit for bit. ``solver``, ``edm``,
    ``last_step``, ``grad`` and the model's output checks are :func:`sample_frames`'; all
    arguments are checked when the generator is made, before the first frame is asked for.
    """
    check_callable("model", model)
    if not isinstance(schedule, WindowSchedule):
        raise TypeError(f"schedule must be a WindowSchedule, got {type(schedule).__name__}")
    fs = tuple(check_int("frame_shape", v, minimum=1) for v in frame_shape)
    if len(fs) != 3:
        raise ValueError(f"frame_shape must be (C, H, W), got {tuple(frame_shape)}")
    b = check_int("batch", batch, minimum=0)
    check_choice("layout", layout, LAYOUTS)
    euler_last = _solver_rule(solver, edm, last_step)
    check_bool("grad", grad)
    dtype = check_floating_dtype("dtype", dtype)
    gens = as_generators(generator, b)
    s, nb, p = schedule.stride, schedule.window // schedule.stride, schedule.steps_per_cycle
    blocks = None
    if num_frames is not None:
        t = check_int("num_frames", num_frames, minimum=1)
        if t % s:
            raise ValueError(f"num_frames must be a multiple of stride = {s}, got {t}")
        if t < schedule.window:
            raise ValueError(
                f"the schedule's window ({schedule.window} frames) is larger than the stream "
                f"(num_frames = {t}): use a smaller window or a longer stream (or "
                f"sample_frames on schedule.unroll(num_frames))"
            )
        blocks = t // s
    ax = frame_axis(layout)
    c_, h_, w_ = fs
    bshape = (b, c_, s, h_, w_) if layout == "BCTHW" else (b, s, c_, h_, w_)
    return _stream(model, schedule, gens, bshape, ax, s, nb, p, blocks, solver, euler_last,
                   edm, device, dtype, grad)


def _stream(model, sch, gens, bshape, ax, s, nb, p, blocks, solver, euler_last, edm, device,
            dtype, grad):
    win = None  # the window tensor (working dtype): blocks lo .. hi - 1
    wdt = work_dtype(dtype)
    lo = 0
    top = sch.sigma_max
    c = 1 - nb
    while True:
        hi = c + nb if blocks is None else min(c + nb, blocks)
        if hi > lo and (win is None or win.shape[ax] < (hi - lo) * s):  # a block enters
            eps = randn(bshape, generator=gens, device=device, dtype=dtype)
            new = (eps * top if edm else eps).to(wdt)  # the state stays in the working dtype
            win = new if win is None else torch.cat([win, new], dim=ax)
        if win is None or hi <= lo:
            return
        first = max(c, 0)
        rows = [[sch.level(r, (bk - c) * s + f) for bk in range(first, hi) for f in range(s)]
                for r in range(p + 1)]
        calls = []
        for a, bb, ka, kb in sch.calls:
            a2, b2 = max(a + c * s, first * s) - first * s, min(bb + c * s, hi * s) - first * s
            ka2, kb2 = max(ka + c * s - first * s, a2), min(kb + c * s - first * s, b2)
            if ka2 < kb2:
                calls.append((a2, b2, ka2, kb2))
        m = check_sigma_matrix("levels", rows, win.shape[ax], high=None)
        wins = _check_windows([tuple(calls)] * p, p, win.shape[ax], m[1:] != m[:-1])
        with torch.set_grad_enabled(grad):
            win = _run(model, win, m, wins, solver, euler_last, ax, edm, None, False, grad,
                       model_dtype=dtype)
        # the block at position 0 is clean now: yield it and let it leave
        if c >= 0:
            out = win.narrow(ax, 0, s).to(dtype)
            for f in range(s):
                yield out.select(ax, f)
            win = win.narrow(ax, s, win.shape[ax] - s)
            lo = c + 1
        c += 1


# ----------------------------------------------------------------------------- guidance
def history_guidance(model, scale, history, *, model_uncond=None, layout="BCTHW",
                     sigma_max: float = 1.0, sigmas=None, generator=None) -> Callable:
    """History guidance (History-Guided Video Diffusion, arXiv 2502.06764): returns
    ``guided(x, σ) = u + w·(c - u)``.

    ``c = model(x, σ)``; ``u`` is the same model with the history frames fully noised:
    their σ set to ``sigma_max`` and their content replaced by pure noise ``sigma_max·ε``
    (EDM, ``sigma_max > 1``) or ``ε`` (flow, ``sigma_max = 1``), ε drawn from ``generator``
    at every call. ``history``: the number of leading frames, or a (T,) bool mask.
    ``model_uncond=None`` batches both branches in one call in diffusers' order
    ``model(cat([x_u, x]), cat([σ_u, σ]))`` = ``[uncond; cond]``; otherwise
    ``u = model_uncond(x_u, σ_u)``. ``σ`` is the (B, T) per-frame level
    :func:`sample_frames` passes.

    ``scale`` is anything ``vidnoise.samplers.cfg`` takes (parsed by
    ``vidnoise.samplers.guidance.scale_plan``): a float, a per-step sequence, a callable
    ``(0, step, N) -> float`` or ``dynamic_cfg(...)``; all but the float need ``sigmas``,
    the level grid (N + 1 decreasing values) the schedule's levels come from. ``cfg``'s rule
    is applied per frame: frame f at level ``σ_f`` is guided with ``w_i`` for the first grid
    step i with ``σ_i <= σ_f`` (relative tolerance 1e-6; clamped to steps 0 .. N - 1), so a
    frame's scale follows its own level (with identical columns: ``cfg``'s per-step scale
    exactly). The look-up runs on the device (no host sync). The model outputs are checked
    as the samplers check them (type, shape, device).
    """
    check_callable("model", model)
    check_callable("model_uncond", model_uncond, optional=True)
    ax = frame_axis(layout)
    smax = check_float("sigma_max", sigma_max, low=0.0, low_open=True)
    w, plan = _history_scale(scale, sigmas)
    if isinstance(history, Tensor):
        if history.dtype != torch.bool or history.dim() != 1:
            raise ValueError(f"history must be an int or a (T,) bool mask, got {history!r}")
        mask_host = history.detach().cpu()
    else:
        mask_host = check_int("history", history, minimum=0)
    cache: dict = {}

    def masks(x):
        t = x.shape[ax]
        key = (x.device, x.dtype, t)
        if key not in cache:
            if isinstance(mask_host, int):
                if mask_host > t:
                    raise ValueError(f"history ({mask_host}) must be <= the number of frames {t}")
                m = torch.arange(t) < mask_host
            else:
                if mask_host.numel() != t:
                    raise ValueError(f"history mask must have {t} values, got {mask_host.numel()}")
                m = mask_host
            shape = [1, 1, 1, 1, 1]
            shape[ax] = t
            tabs = None
            if plan is not None:  # w_i (working dtype) and σ_i (float64) on the device
                tabs = (to_device(plan[0], work_dtype(x.dtype), x.device),
                        to_device(plan[1], torch.float64, x.device))
            cache[key] = (m.to(x.device), m.to(x.device).reshape(shape), tabs)
        return cache[key]

    def guided(x, sigma):
        check_tensor("x", x, ndims=(5,))
        t = x.shape[ax]
        if not isinstance(sigma, Tensor) or tuple(sigma.shape) != (x.shape[0], t):
            got = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
            raise ValueError(f"sigma must be a (B, T) = ({x.shape[0]}, {t}) tensor of per-frame "
                             f"levels, got {got}")
        m_t, m_x, tabs = masks(x)
        eps = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_u = torch.where(m_x, eps * smax if smax != 1.0 else eps, x)
        s_u = torch.where(m_t, torch.full_like(sigma, smax), sigma)
        if model_uncond is None:
            both = model(torch.cat([x_u, x]), torch.cat([s_u, sigma]))
            if not (isinstance(both, Tensor) and both.shape[0] == 2 * x.shape[0]):
                model_output("model (batched: [uncond; cond])", both, torch.cat([x, x]))
            u, c = both.chunk(2)
        else:
            u, c = model_uncond(x_u, s_u), model(x, sigma)
        c = model_output("model", c, x)
        u = model_output("model_uncond" if model_uncond is not None else "model", u, x)
        if tabs is None:
            return combine(c, u, w)
        w_t, g_t = tabs
        # i(σ_f) = #{j : σ_j > σ_f·(1 + 1e-6)} = first j with σ_j <= σ_f, clamped to N - 1
        sig = sigma.to(torch.float64)
        idx = (g_t > sig[..., None] * (1.0 + 1e-6)).sum(-1).clamp(max=g_t.shape[0] - 1)
        view = [x.shape[0], 1, 1, 1, 1]
        view[ax] = t
        return combine(c, u, w_t[idx].reshape(view))

    return guided


def _history_scale(scale, sigmas):
    """``(w, None)`` for a float scale, ``(None, (per-step scales, grid steps))`` otherwise,
    parsed by ``scale_plan`` (the one parser ``cfg`` uses)."""
    if isinstance(scale, Tensor) and scale.dim() == 0:  # read once, here, as cfg does
        scale = float(check_real_tensor("scale", scale))
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        return scale_plan("scale", scale, [1])[0][0], None
    if scale is None or isinstance(scale, (str, bool)):
        scale_plan("scale", object() if scale is None else scale, [1])  # the TypeError
    if sigmas is None:
        raise ValueError(
            "sigmas is required with a per-step or dynamic scale: pass the level grid the "
            "schedule was built from (N + 1 values) so each frame's level finds its step"
        )
    grid = read_grid("sigmas", sigmas, end=None)
    return None, (scale_plan("scale", scale, [len(grid) - 1])[0], grid[:-1])


# ----------------------------------------------------------------------------- training
def frame_sigmas(batch: int, num_frames: int, sampler=None, *, chunk: int = 1,
                 context: int = 0, generator=None, device=None) -> Tensor:
    """Diffusion Forcing's training levels: a (B, T) float32 matrix of independent levels.

    One draw per (sample, chunk of ``chunk`` frames) from ``sampler(n, generator=...,
    device=...)`` (any of ``vidnoise.sigma_samplers``; default ``sigma_samplers.uniform``),
    repeated over the chunk's frames; the first ``context`` frames are clean (σ = 0). With
    one generator per sample, sample ``i``'s levels come from generator ``i`` only
    (``sampler`` called once per sample). The last chunk may be shorter.
    """
    b = check_int("batch", batch, minimum=0)
    t = check_int("num_frames", num_frames, minimum=1)
    c = check_int("chunk", chunk, minimum=1)
    ctx = check_int("context", context, minimum=0, maximum=t)
    if sampler is None:
        from vidnoise.sigma_samplers import uniform as sampler
    check_callable("sampler", sampler)
    gens = as_generators(generator, b)
    n = -(-t // c)
    if isinstance(gens, list):
        draws = [sampler(n, generator=g, device=device) for g in gens]
        lv = torch.stack(draws) if draws else torch.empty(0, n, device=device)
    else:
        lv = sampler(b * n, generator=gens, device=device).reshape(b, n)
    out = lv.to(torch.float32).repeat_interleave(c, dim=1)[:, :t].clone()
    out[:, :ctx] = 0.0
    return out


def frame_training_sample(path, x0: Tensor, sampler=None, *, chunk: int = 1, context: int = 0,
                          layout: str = "BCTHW", generator=None):
    """Diffusion Forcing's training input: :func:`frame_sigmas` levels for ``x0`` (B, C, T,
    H, W or B, T, C, H, W), noised by ``path`` per frame.

    Returns ``path.sample(x0, σ, generator=generator, layout=layout)``, a
    ``vidnoise.paths.PathSample`` (``x``, ``target``, the (B, T) ``sigma``, ``noise``):
    the path's own per-frame formulas (``docs/math.md §1``, ``§10``). ``path``: a
    ``FlowPath`` or an ``EDMPath`` (pick ``sampler`` for its σ, e.g.
    ``sigma_samplers.lognormal`` for EDM). With one generator per sample, sample i's levels
    and then its noise come from generator i only. Context frames (σ = 0) are ``x0`` exactly.
    """
    from vidnoise.paths import EDMPath, FlowPath

    if not isinstance(path, (FlowPath, EDMPath)):
        raise TypeError(
            f"path must be a FlowPath or an EDMPath (a σ-level path), got "
            f"{type(path).__name__}; a VPPath takes integer timesteps: draw them and call "
            f"path.sample(x0, t, layout=...) with a (B, T) int tensor"
        )
    check_tensor("x0", x0, ndims=(5,))
    check_choice("layout", layout, LAYOUTS)
    gens = as_generators(generator, x0.shape[0])
    sigma = frame_sigmas(x0.shape[0], x0.shape[frame_axis(layout)], sampler, chunk=chunk,
                         context=context, generator=gens, device=x0.device)
    return path.sample(x0, sigma, generator=gens, layout=layout)
