"""diffusers schedulers and model adapters (needs the ``diffusers`` extra; imported only here).

* :class:`FlowScheduler`: a drop-in for ``FlowMatchEulerDiscreteScheduler`` (Wan, Mochi,
  HunyuanVideo, LTX-Video, SD3, Flux pipelines) with vidnoise's Euler, Heun and midpoint
  solvers and a sync-free ``step`` (a step counter; no ``.item()``, ``nonzero()`` or look-up
  of the timestep value).
* :class:`VPScheduler`: a drop-in for ``CogVideoXDDIMScheduler`` (VP / v-prediction): DDIM
  with η = 0, which is Euler in EDM's σ coordinates, and Heun with EDM churn.
* :func:`as_flow_model` and :func:`as_denoiser`: a diffusers transformer as
  ``model(x, sigma) -> v`` (flow convention) or as an EDM denoiser ``D(x, sigma) -> x0``,
  for :func:`vidnoise.samplers.sample_flow`, :func:`~vidnoise.samplers.sample_edm` and
  :func:`~vidnoise.samplers.rollout`.

Batched classifier-free guidance follows diffusers: the batch is ``[uncond; cond]``.
The math is in ``docs/math.md §12``; examples in ``docs/interop.md``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
    from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput
except ImportError as exc:  # pragma: no cover - exercised only without diffusers
    raise ImportError(
        "vidnoise.diffusers needs diffusers: pip install 'vidnoise[diffusers]'"
    ) from exc

from vidnoise._checks import (
    check_bool,
    check_callable,
    check_choice,
    check_float,
    check_int,
    work_dtype,
)
from vidnoise.paths import VPPath

__all__ = ["FlowScheduler", "VPScheduler", "as_flow_model", "as_denoiser"]

SOLVERS = ("euler", "heun", "midpoint")
VP_SOLVERS = ("euler", "heun")


def _unsupported(name: str, value, what: str):
    raise ValueError(f"{name}={value!r} is not supported by {what}; use diffusers' scheduler")


def _plan_calls(nodes: list[float], solver: str, terminal_corrector: bool = False):
    """Per model call: ``(kind, h, i)`` with the step ``h = nodes[i+1] - nodes[i]``.

    kinds: ``"e"`` (Euler: ``x + h out``), ``"p"`` (predictor, saves ``x`` and ``out``),
    ``"c"`` (Heun corrector ``x0 + h/2 (out0 + out)``), ``"m"`` (midpoint half step, saves
    ``x``), ``"M"`` (midpoint full step ``x0 + h out``). The last step of Heun is Euler (the
    corrector would need the model at the terminal node).
    """
    n = len(nodes) - 1
    plan = []
    for i in range(n):
        h = nodes[i + 1] - nodes[i]
        if solver == "euler" or (solver == "heun" and i == n - 1 and not terminal_corrector):
            plan.append(("e", h, i))
        elif solver == "heun":
            plan += [("p", h, i), ("c", h, i)]
        else:
            plan += [("m", h, i), ("M", h, i)]
    return plan


class _CounterMixin:
    """The step counter shared by both schedulers (no timestep-value look-up)."""

    @property
    def step_index(self):
        """The index of the next model call (``None`` before the first ``step``)."""
        return self._step_index

    @property
    def begin_index(self):
        """The first call index, set by the pipeline with :meth:`set_begin_index`."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        """Start at call ``begin_index`` (pipelines call this with 0 before the loop)."""
        self._begin_index = check_int("begin_index", begin_index, minimum=0)

    def _next_call(self) -> int:
        if self._plan is None:
            raise ValueError(f"{type(self).__name__}.set_timesteps must be called before step")
        if self._step_index is None:
            self._step_index = self._begin_index or 0
        k = self._step_index
        if k >= len(self._plan):
            raise ValueError(
                f"step called {k + 1} times but the schedule has {len(self._plan)} model calls; "
                "call set_timesteps again for a new run"
            )
        return k

    def index_for_timestep(self, timestep, schedule_timesteps=None) -> int:
        """The call index of one ``timestep`` in ``schedule_timesteps`` (default
        ``timesteps``), by diffusers' rule (the second of two equal values); syncs."""
        return self._index_for_timestep(timestep, schedule_timesteps)[0]

    def _index_for_timestep(self, timestep, schedule_timesteps=None) -> list[int]:
        """Call indices of ``timestep`` (a number or tensor, one per item) in ``timesteps``.

        diffusers' rule (``FlowMatchEulerDiscreteScheduler.index_for_timestep``): where a value
        occurs twice (Heun: a corrector and the next predictor share it) the second is taken,
        so a schedule sliced at ``timesteps[k*order:]`` starts at a step's first call. Syncs
        with the device (``nonzero``); used only where no index was set.
        """
        if schedule_timesteps is None and self._plan is None:
            raise ValueError(f"{type(self).__name__}.set_timesteps must be called first")
        sched = self.timesteps if schedule_timesteps is None else schedule_timesteps
        sched = torch.as_tensor(sched).detach().to("cpu", torch.float64)
        ts = torch.as_tensor(timestep).detach().to("cpu", torch.float64).reshape(-1)
        out = []
        for t in ts.tolist():
            hits = (sched == t).nonzero().flatten().tolist()
            if not hits:
                raise ValueError(
                    f"timestep={t!r} is not one of this schedule's timesteps "
                    f"({sched.tolist()}); pass a value of scheduler.timesteps or call "
                    "set_begin_index"
                )
            out.append(hits[1] if len(hits) > 1 else hits[0])
        return out

    def _start_indices(self, timestep, batch: int) -> list[int]:
        """The call index per item for ``scale_noise`` / ``add_noise`` (diffusers' rule):
        ``step_index`` inside a run, else ``begin_index``, else looked up from ``timestep``;
        a look-up of one shared index before the first ``step`` becomes ``begin_index``
        (pipelines slicing ``timesteps`` for strength < 1 call this before the loop)."""
        if self._step_index is not None:
            return [self._step_index] * batch
        if self._begin_index is not None:
            return [self._begin_index] * batch
        idx = self._index_for_timestep(timestep)
        if len(idx) == 1:
            idx = idx * batch
        if len(idx) != batch:
            raise ValueError(
                f"timestep must hold 1 or {batch} values (one per item of dim 0), "
                f"got {len(idx)}"
            )
        if len(set(idx)) == 1:
            self._begin_index = idx[0]
        return idx

    @property
    def state_in_first_order(self) -> bool:
        """True when the next call is the first of its step (diffusers' Heun API)."""
        return self._saved is None

    def __len__(self):
        return self.config.num_train_timesteps


class FlowScheduler(_CounterMixin, SchedulerMixin, ConfigMixin):
    """Flow-matching scheduler for diffusers pipelines with Euler, Heun or midpoint steps.

    ``FlowScheduler.from_config(pipe.scheduler.config, solver=...)`` takes a
    ``FlowMatchEulerDiscreteScheduler`` config and builds its σ grid the same way
    (``set_timesteps(num_inference_steps, sigmas=, mu=, timesteps=)``: static ``shift``, or
    dynamic shifting ``exp(mu)`` (``time_shift_type="exponential"``: ``e^mu / (e^mu + 1/σ - 1)``;
    ``"linear"``: ``mu / (mu + 1/σ - 1)``), then ``shift_terminal`` stretching
    ``1 - σ`` so the last value is ``shift_terminal``, then ``invert_sigmas`` (Mochi:
    ``σ -> 1 - σ``, ending at 1)). Sources: diffusers,
    ``src/diffusers/schedulers/scheduling_flow_match_euler_discrete.py``.

    With ``solver="euler"`` each ``step`` is ``x' = x + (σ' - σ)·out`` in float32, as the
    native scheduler does. ``"heun"`` and ``"midpoint"`` make ``timesteps`` list two model
    calls per step (``order = 2``, as diffusers' ``HeunDiscreteScheduler``): Heun evaluates at
    ``σ_i`` then at ``σ_{i+1}`` on the Euler predictor and averages (``2N - 1`` calls: the last
    step, to the clean end, is Euler); midpoint evaluates at ``σ_i`` then at
    ``(σ_i + σ_{i+1})/2`` (``2N`` calls). The formulas are linear in ``(σ, out)``, so they hold
    in the inverted (Mochi) coordinates too.

    ``step`` ignores the ``timestep`` value: it counts calls from ``begin_index`` (0 if the
    pipeline set none), so it never syncs with the device. A loop over a cut schedule
    (strength < 1) starts where ``set_begin_index`` says, or where ``scale_noise`` found its
    ``timestep`` before the first ``step`` (``docs/math.md §12``). Config keys of diffusers'
    features vidnoise does not implement (Karras / exponential / beta sigmas, stochastic sampling)
    raise ``ValueError`` when set.
    """

    _compatibles = ["FlowMatchEulerDiscreteScheduler"]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        invert_sigmas: bool = False,
        shift_terminal: float | None = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        time_shift_type: str = "exponential",
        stochastic_sampling: bool = False,
        solver: str = "euler",
    ):
        n = check_int("num_train_timesteps", num_train_timesteps, minimum=1)
        shift = check_float("shift", shift, low=0.0, low_open=True)
        check_bool("use_dynamic_shifting", use_dynamic_shifting)
        check_bool("invert_sigmas", invert_sigmas)
        check_choice("time_shift_type", time_shift_type, ("exponential", "linear"))
        check_choice("solver", solver, SOLVERS)
        if shift_terminal is not None:
            check_float("shift_terminal", shift_terminal, low=0.0, high=1.0, high_open=True)
        for key, val in (("use_karras_sigmas", use_karras_sigmas),
                         ("use_exponential_sigmas", use_exponential_sigmas),
                         ("use_beta_sigmas", use_beta_sigmas),
                         ("stochastic_sampling", stochastic_sampling)):
            if val:
                _unsupported(key, val, "FlowScheduler")
        self.order = 1 if solver == "euler" else 2
        # the constructor's training grid, as diffusers builds it (float32)
        t = torch.from_numpy(np.linspace(1, n, n, dtype=np.float32)[::-1].copy())
        sig = t / n
        if not use_dynamic_shifting:
            sig = shift * sig / (1 + (shift - 1) * sig)
        self.timesteps = sig * n
        self.sigmas = sig
        self.sigma_min = float(sig[-1])
        self.sigma_max = float(sig[0])
        self._shift = shift
        self._plan = None
        self._saved = None
        self._step_index = None
        self._begin_index = None
        self.num_inference_steps = None

    @property
    def shift(self) -> float:
        """The static shift (``set_shift`` changes it, as in diffusers)."""
        return self._shift

    def set_shift(self, shift: float):
        """Set the static shift used by the next ``set_timesteps``."""
        self._shift = check_float("shift", shift, low=0.0, low_open=True)

    def _time_shift(self, mu: float, sig: np.ndarray) -> np.ndarray:
        if self.config.time_shift_type == "exponential":
            return math.exp(mu) / (math.exp(mu) + (1 / sig - 1))
        return mu / (mu + (1 / sig - 1))

    def set_timesteps(self, num_inference_steps: int | None = None, device=None,
                      sigmas=None, mu: float | None = None, timesteps=None):
        """Build the grid (as ``FlowMatchEulerDiscreteScheduler.set_timesteps``) and the plan.

        ``sigmas`` (``N`` values, no trailing 0) and ``timesteps`` are taken as diffusers
        takes them: custom ``sigmas`` are shifted; custom ``timesteps`` without ``sigmas``
        are used as given while the σ grid is ``timesteps / N_train`` shifted. Unlike
        diffusers, a trailing 0 (a wasted call at σ = 0, the usual slip with a vidnoise grid
        of ``N + 1`` values) and ``sigmas`` outside [0, 1] (timesteps passed as σ) raise
        ``ValueError`` with the fix.
        """
        cfg = self.config
        if cfg.use_dynamic_shifting and mu is None:
            raise ValueError("mu must be passed when use_dynamic_shifting is True, got None")
        if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
            raise ValueError(
                f"sigmas and timesteps must have the same length, got {len(sigmas)} and "
                f"{len(timesteps)}"
            )
        if num_inference_steps is None:
            if sigmas is None and timesteps is None:
                raise ValueError("pass num_inference_steps, sigmas or timesteps; got none")
            num_inference_steps = len(sigmas) if sigmas is not None else len(timesteps)
        num_inference_steps = check_int("num_inference_steps", num_inference_steps, minimum=1)
        for name, val in (("sigmas", sigmas), ("timesteps", timesteps)):
            if val is not None and len(val) != num_inference_steps:
                raise ValueError(
                    f"{name} must have num_inference_steps={num_inference_steps} values "
                    f"(no trailing 0), got {len(val)}"
                )
        n_train = cfg.num_train_timesteps
        if sigmas is not None:
            arr = np.asarray(torch.as_tensor(sigmas).detach().cpu().to(torch.float64))
            if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
                raise ValueError(
                    f"sigmas must be noise fractions in [0, 1], got values in "
                    f"[{arr.min():.6g}, {arr.max():.6g}]; a grid of timesteps (0..{n_train}) "
                    f"goes to timesteps= or is divided by num_train_timesteps={n_train}"
                )
        for name, val in (("sigmas", sigmas), ("timesteps", timesteps)):
            if val is not None and len(val) > 0 and float(val[-1]) == 0.0:
                raise ValueError(
                    f"{name} must not end with 0: the scheduler appends the terminal 0 itself, "
                    f"so a trailing 0 runs a wasted model call at σ = 0; pass {name}[:-1] "
                    f"({len(val) - 1} steps)"
                )
        self.num_inference_steps = num_inference_steps
        given_t = timesteps is not None
        if given_t:
            timesteps = np.array(timesteps).astype(np.float32)
        if sigmas is None:
            if timesteps is None:
                timesteps = np.linspace(self.sigma_max * n_train, self.sigma_min * n_train,
                                        num_inference_steps)
            sig = timesteps / n_train
        else:
            sig = np.array(sigmas).astype(np.float32)
        if cfg.use_dynamic_shifting:
            sig = self._time_shift(mu, sig)
        else:
            sig = self._shift * sig / (1 + (self._shift - 1) * sig)
        if cfg.shift_terminal:
            one_minus = 1 - sig
            sig = 1 - one_minus / (one_minus[-1] / (1 - cfg.shift_terminal))
        sig = torch.from_numpy(np.asarray(sig)).to(torch.float32)
        if cfg.invert_sigmas:
            sig = 1.0 - sig
            ts = sig * n_train
            end = 1.0
        else:
            ts = torch.from_numpy(timesteps).to(torch.float32) if given_t else sig * n_train
            end = 0.0
        nodes = [float(v) for v in sig.tolist()] + [end]
        self._build(nodes, [float(v) for v in ts.tolist()], device)

    def _build(self, nodes: list[float], ts: list[float], device):
        solver = self.config.solver
        n_train = self.config.num_train_timesteps
        self._plan = _plan_calls(nodes, solver)
        self._nodes = nodes
        call_sig, call_t = [], []
        for kind, _h, i in self._plan:
            if kind in ("e", "p", "m"):
                call_sig.append(nodes[i])
                call_t.append(ts[i])
            elif kind == "c":
                call_sig.append(nodes[i + 1])
                call_t.append(ts[i + 1])
            else:  # midpoint: halfway in σ and in t
                mid = (nodes[i] + nodes[i + 1]) / 2
                call_sig.append(mid)
                t_next = ts[i + 1] if i + 1 < len(ts) else nodes[-1] * n_train
                call_t.append((ts[i] + t_next) / 2)
        self.timesteps = torch.tensor(call_t, dtype=torch.float32, device=device)
        self.sigmas = torch.tensor(call_sig + [nodes[-1]], dtype=torch.float32, device=device)
        self._call_sigmas = call_sig
        self._saved = None
        self._step_index = None
        self._begin_index = None

    def scale_noise(self, sample, timestep, noise=None):
        """Forward process ``σ·noise + (1 - σ)·sample`` (float32 for half precision, returned
        in ``sample``'s dtype) at the σ of the model call that comes next.

        That call is found as diffusers finds it: the current ``step_index`` inside a run,
        else ``begin_index``, else each item's ``timestep`` is looked up in ``timesteps``
        (this syncs, as in diffusers; an unknown value raises ``ValueError``). A look-up that
        gives one index before the first ``step`` also sets ``begin_index``, so a pipeline that
        slices ``timesteps`` for strength < 1 and noises its latents here (Wan video2video)
        starts its loop at that call as the native scheduler does.
        """
        if noise is None:
            raise ValueError("noise must be a tensor, got None")
        if noise.shape != sample.shape:
            raise ValueError(f"noise must have sample's shape {tuple(sample.shape)}, "
                             f"got {tuple(noise.shape)}")
        idx = self._start_indices(timestep, sample.shape[0] if sample.dim() else 1)
        wdt = work_dtype(sample.dtype)
        call_sig = self._call_sigmas + [self._nodes[-1]]  # after the last call: the end
        if len(set(idx)) == 1:  # one σ: a host scalar (no copy to the device)
            sig = call_sig[idx[0]]
        else:
            sig = torch.tensor([call_sig[k] for k in idx], dtype=wdt,
                               device=sample.device).reshape((-1,) + (1,) * (sample.dim() - 1))
        out = sig * noise.to(wdt) + (1.0 - sig) * sample.to(wdt)
        return out.to(sample.dtype)

    def step(self, model_output, timestep, sample, generator=None, return_dict: bool = True,
             **kwargs):
        """One model call's update (the ``timestep`` value is not read: a counter is used).

        Computed in float32 (float64 stays float64) and returned in ``model_output``'s
        dtype, as the native scheduler does. Extra keyword arguments of the native ``step``
        (``s_churn`` ...) are accepted and ignored.

        ``per_token_timesteps`` (LTX-Video's condition pipeline: one timestep per token,
        ``(B, S)`` or broadcastable ``(B, 1)`` for a packed ``(B, S, C)`` sample),
        ``solver="euler"`` only: each token steps from its own ``σ_tok = t_tok / N`` to the
        largest grid σ below ``σ_tok - 1e-6``: ``x' = x + (σ_tok - σ_below)·out`` (the
        caller passes the negated velocity), kept in float32, exactly as the native
        scheduler; tensor ops only, no sync.
        """
        ptt = kwargs.get("per_token_timesteps")
        k = self._next_call()
        if ptt is not None:
            if self.config.solver != "euler":
                _unsupported("per_token_timesteps", "a tensor",
                             f"FlowScheduler(solver={self.config.solver!r}); use 'euler'")
            lead = tuple(sample.shape[:ptt.dim()])
            if ptt.dim() >= sample.dim() or any(a not in (1, b) for a, b in zip(ptt.shape, lead)):
                raise ValueError(f"per_token_timesteps must broadcast to sample's leading shape "
                                 f"{lead} (one timestep per token), got {tuple(ptt.shape)}")
            tok = ptt / self.config.num_train_timesteps
            grid = self.sigmas.to(tok.device).reshape((-1,) + (1,) * tok.dim())
            below = ((grid < tok.unsqueeze(0) - 1e-6) * grid).amax(dim=0)
            dt = (tok - below).unsqueeze(-1)
            self._step_index = k + 1
            prev = sample.to(torch.float32) + dt * model_output
            return (prev,) if not return_dict else SchedulerOutput(prev_sample=prev)
        kind, h, _ = self._plan[k]
        wdt = work_dtype(sample.dtype)
        x = sample.to(wdt)
        out = model_output.to(wdt)
        if kind == "e":
            prev = torch.add(x, out, alpha=h)  # x' = x + (σ' - σ)·out (one fused kernel)
        elif kind == "p":
            self._saved = (x, out)
            prev = torch.add(x, out, alpha=h)  # Euler predictor x̃ at σ'
        elif kind == "c":
            x0, out0 = self._saved
            self._saved = None
            prev = torch.add(x0, out0 + out, alpha=h / 2)  # Heun: x' = x + h (out + out')/2
        elif kind == "m":
            self._saved = (x, None)
            prev = torch.add(x, out, alpha=h / 2)  # half step to σ_m
        else:
            x0 = self._saved[0]
            self._saved = None
            prev = torch.add(x0, out, alpha=h)  # midpoint: x' = x + h·out(x_m, σ_m)
        self._step_index = k + 1
        prev = prev.to(model_output.dtype)
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)


class VPScheduler(_CounterMixin, SchedulerMixin, ConfigMixin):
    """VP scheduler for CogVideoX-style pipelines: DDIM (η = 0) = Euler in EDM σ, or Heun.

    ``VPScheduler.from_config(pipe.scheduler.config, solver=...)`` takes a
    ``CogVideoXDDIMScheduler`` config; ``abar`` is :class:`vidnoise.paths.VPPath` with the same
    betas, ``snr_shift_scale`` and zero-terminal-SNR rescale. Timesteps follow
    ``timestep_spacing`` (``"linspace"``, ``"leading"`` + ``steps_offset``, ``"trailing"``) and
    each step goes from ``abar_t`` to ``abar_{t - N_train // N}`` (``final_alpha_cumprod``
    below 0), exactly as diffusers' ``CogVideoXDDIMScheduler.step``
    (``src/diffusers/schedulers/scheduling_ddim_cogvideox.py``).

    With ``D`` the prediction of ``x0`` (``prediction_type`` ``"v_prediction"``:
    ``sqrt(abar) x - sqrt(1-abar) out``; ``"epsilon"``: ``(x - sqrt(1-abar) out)/sqrt(abar)``;
    ``"sample"``: ``out``) and ``σ = sqrt((1-abar)/abar)``, EDM's Euler step
    ``x_edm' = D + (σ'/σ)(x_edm - D)`` with ``x_edm = x / sqrt(abar)`` is, in VP coordinates,
    ``x' = a x + (sqrt(abar') - sqrt(abar) a) D`` with ``a = sqrt((1-abar')/(1-abar))``: DDIM
    with η = 0. ``solver="heun"`` adds a second call at ``t'`` on the Euler result and
    averages the EDM slopes ``(x_edm - D)/σ`` (not on a step from ``abar = 0``, where σ = inf,
    nor on the last step to ``abar' = 1``). ``s_churn > 0`` (EDM churn, with ``s_tmin``,
    ``s_tmax``, ``s_noise``) raises σ to ``σ̂ = σ(1 + γ)``, ``γ = min(s_churn/N, √2 - 1)``,
    by adding noise at the end of the previous step, so the model is called at the
    (fractional) timestep of ``σ̂`` (linear in log σ between table entries); it needs
    ``generator=`` in ``step`` for reproducibility and is never applied to the first step.
    """

    _compatibles = ["CogVideoXDDIMScheduler", "CogVideoXDPMScheduler"]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.0120,
        beta_schedule: str = "scaled_linear",
        trained_betas=None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        snr_shift_scale: float = 3.0,
        solver: str = "euler",
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
    ):
        if trained_betas is not None:
            _unsupported("trained_betas", "a list", "VPScheduler")
        check_choice("prediction_type", prediction_type, ("epsilon", "v_prediction", "sample"))
        check_choice("timestep_spacing", timestep_spacing, ("linspace", "leading", "trailing"))
        check_choice("solver", solver, VP_SOLVERS)
        check_bool("set_alpha_to_one", set_alpha_to_one)
        check_int("steps_offset", steps_offset, minimum=0)
        check_float("s_churn", s_churn, low=0.0)
        check_float("s_tmin", s_tmin, low=0.0)
        check_float("s_tmax", s_tmax, low=s_tmin, allow_inf=True)
        check_float("s_noise", s_noise, low=0.0)
        self.path = VPPath(num_train_timesteps=num_train_timesteps, beta_start=beta_start,
                           beta_end=beta_end, beta_schedule=beta_schedule,
                           snr_shift_scale=snr_shift_scale,
                           rescale_zero_terminal_snr=rescale_betas_zero_snr)
        self.alphas_cumprod = self.path.alpha_bar  # float64, as diffusers' table
        self.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if set_alpha_to_one \
            else self.alphas_cumprod[0]
        self.init_noise_sigma = 1.0
        self.order = 1 if solver == "euler" else 2
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)
        self._plan = None
        self._saved = None
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, sample, timestep=None):
        """Identity (VP models take ``x`` as is)."""
        return sample

    def add_noise(self, original_samples, noise, timesteps):
        """VP forward process ``sqrt(abar_t)·x0 + sqrt(1 - abar_t)·noise`` at integer
        ``timesteps`` (one per item of dim 0, or one for all), as
        ``CogVideoXDDIMScheduler.add_noise``: ``abar`` gathered on the samples' device (no
        sync), computed in float32 for half precision (diffusers: in the samples' dtype) and
        returned in ``original_samples``' dtype.

        After ``set_timesteps`` and before the first ``step`` with no ``begin_index`` set,
        the call index of ``timesteps`` is also looked up (a sync, once) and becomes
        ``begin_index`` when all items share it (values off the schedule set none): a
        pipeline that slices ``timesteps`` for strength < 1 and noises its latents here
        (CogVideoX video2video) then starts its loop there, as the native scheduler (which
        reads the timestep value in ``step``) does.
        """
        if noise.shape != original_samples.shape:
            raise ValueError(f"noise must have original_samples' shape "
                             f"{tuple(original_samples.shape)}, got {tuple(noise.shape)}")
        t = torch.as_tensor(timesteps, device=original_samples.device)
        if t.is_floating_point():
            raise TypeError(f"timesteps must be integers (indices of alphas_cumprod), got "
                            f"dtype {t.dtype}; with s_churn the loop's fractional timesteps "
                            "are not table entries: call set_begin_index instead")
        t = t.reshape(-1)
        if self._plan is not None and self._step_index is None and self._begin_index is None:
            try:  # a start for the loop; training-style timesteps off the grid set none
                self._start_indices(t, original_samples.shape[0])
            except ValueError:
                pass
            if self._begin_index is not None and self.order == 2 \
                    and not self._plan[0].get("predictor"):
                self._begin_index = None
                raise ValueError(
                    "VPScheduler(solver='heun') with a first step from abar = 0 (zero terminal "
                    f"SNR) lists {len(self._plan)} calls for {self.num_inference_steps} steps, "
                    "so a pipeline's timesteps[k * order:] (strength < 1) does not start at a "
                    "step; use solver='euler' for video2video, or slice at the step starts "
                    "yourself and call set_begin_index"
                )
        wdt = work_dtype(original_samples.dtype)
        ab = self.alphas_cumprod.to(original_samples.device)[t].to(wdt)
        ab = ab.reshape((-1,) + (1,) * (original_samples.dim() - 1))
        out = ab.sqrt() * original_samples.to(wdt) + (1 - ab).sqrt() * noise.to(wdt)
        return out.to(original_samples.dtype)

    def get_velocity(self, sample, noise, timesteps):
        """The v-prediction target ``sqrt(abar_t)·noise - sqrt(1 - abar_t)·sample`` at integer
        ``timesteps`` (one per item), as ``CogVideoXDDIMScheduler.get_velocity``; float32 for
        half precision, returned in ``sample``'s dtype."""
        if noise.shape != sample.shape:
            raise ValueError(f"noise must have sample's shape {tuple(sample.shape)}, "
                             f"got {tuple(noise.shape)}")
        t = torch.as_tensor(timesteps, device=sample.device).reshape(-1)
        if t.is_floating_point():
            raise TypeError(f"timesteps must be integers (indices of alphas_cumprod), got "
                            f"dtype {t.dtype}")
        wdt = work_dtype(sample.dtype)
        ab = self.alphas_cumprod.to(sample.device)[t].to(wdt)
        ab = ab.reshape((-1,) + (1,) * (sample.dim() - 1))
        return (ab.sqrt() * noise.to(wdt) - (1 - ab).sqrt() * sample.to(wdt)).to(sample.dtype)

    def _spacing(self, n: int) -> np.ndarray:
        cfg = self.config
        big_n = cfg.num_train_timesteps
        if cfg.timestep_spacing == "linspace":
            return np.linspace(0, big_n - 1, n).round()[::-1].copy().astype(np.int64)
        if cfg.timestep_spacing == "leading":
            ratio = big_n // n
            return (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64) \
                + cfg.steps_offset
        return np.round(np.arange(big_n, 0, -big_n / n)).astype(np.int64) - 1

    def _abar(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else float(self.final_alpha_cumprod)

    def _t_of_sigma(self, sigma: float) -> float:
        """The fractional timestep of an EDM σ: linear in log σ between table entries."""
        ab = self.alphas_cumprod.numpy()
        with np.errstate(divide="ignore"):
            log_s = np.log(np.sqrt((1 - ab) / ab))
        return float(np.interp(math.log(sigma), log_s, np.arange(len(ab))))

    def set_timesteps(self, num_inference_steps: int, device=None):
        """CogVideoX DDIM timesteps; with ``solver="heun"`` the second calls are listed too."""
        big_n = self.config.num_train_timesteps
        n = check_int("num_inference_steps", num_inference_steps, minimum=1, maximum=big_n)
        self.num_inference_steps = n
        ts = [int(v) for v in self._spacing(n)]
        stride = big_n // n
        cfg = self.config
        gmax = min(cfg.s_churn / n, math.sqrt(2.0) - 1.0)
        plan, call_t = [], []
        for i, t in enumerate(ts):
            tp = t - stride
            ab, abp = self._abar(t), self._abar(tp)
            t_eval = t
            if i > 0 and gmax > 0:
                # churn: the sample sits at the previous step's target abar; raise its σ to
                # σ̂ = σ(1 + γ) by adding noise at the end of the previous step
                ab_prev_end = plan[-1]["abp"]
                sig = math.sqrt((1 - ab_prev_end) / ab_prev_end)
                if cfg.s_tmin <= sig <= cfg.s_tmax:
                    sig_hat = sig * (1 + gmax)
                    ab = 1.0 / (1.0 + sig_hat * sig_hat)
                    t_eval = self._t_of_sigma(sig_hat)
                    plan[-1]["churn"] = (sig, sig_hat)
            heun = cfg.solver == "heun" and ab > 0 and abp < 1.0 and tp >= 0
            plan.append(dict(ab=ab, abp=abp, predictor=heun, churn=None))
            call_t.append(t_eval)
            if heun:
                plan.append(dict(ab=ab, abp=abp, corrector=True, churn=None))
                call_t.append(tp)
        self._plan = plan
        integral = all(float(t).is_integer() for t in call_t)
        self.timesteps = torch.tensor(call_t, dtype=torch.int64 if integral else torch.float32,
                                      device=device)
        self._saved = None
        self._step_index = None
        self._begin_index = None

    def _x0(self, out, x, ab: float):
        p = self.config.prediction_type
        if p == "v_prediction":
            return math.sqrt(ab) * x - math.sqrt(1 - ab) * out
        if p == "epsilon":
            return (x - math.sqrt(1 - ab) * out) / math.sqrt(ab)
        return out

    def step(self, model_output, timestep, sample, eta: float = 0.0, generator=None,
             return_dict: bool = True, **kwargs):
        """One model call's update (the ``timestep`` value is not read: a counter is used).

        Computed in float32 for half-precision input (diffusers' DDIM computes in the
        sample's dtype) and returned in ``sample``'s dtype. ``eta`` must be 0 (deterministic
        DDIM); churn noise comes from ``s_churn`` in the config and is drawn with
        ``generator``. Returns ``DDIMSchedulerOutput(prev_sample, pred_original_sample)``
        (or that tuple), the second being this call's prediction of ``x0``, as diffusers.
        """
        if eta:
            _unsupported("eta", eta, "VPScheduler (stochastic DDIM); use s_churn")
        k = self._next_call()
        e = self._plan[k]
        ab, abp = e["ab"], e["abp"]
        dtype = sample.dtype
        wdt = work_dtype(dtype)
        sample, model_output = sample.to(wdt), model_output.to(wdt)
        a = math.sqrt((1 - abp) / (1 - ab))  # sqrt((1-abar')/(1-abar))
        b = math.sqrt(abp) - math.sqrt(ab) * a
        if e.get("corrector"):
            x, d0 = self._saved  # x at σ̂ (VP), EDM slope (x_edm - D)/σ at the predictor
            self._saved = None
            den2 = self._x0(model_output, sample, abp)
            sp = math.sqrt((1 - abp) / abp)
            d1 = (sample / math.sqrt(abp) - den2) / sp
            s = math.sqrt((1 - ab) / ab)
            x_edm = x / math.sqrt(ab) + (sp - s) * 0.5 * (d0 + d1)
            prev = math.sqrt(abp) * x_edm
            den = den2
        else:
            den = self._x0(model_output, sample, ab)
            prev = a * sample + b * den  # DDIM η = 0 = EDM Euler
            if e.get("predictor"):
                s = math.sqrt((1 - ab) / ab)
                self._saved = (sample, (sample / math.sqrt(ab) - den) / s)
        churn = e["churn"]
        if churn is not None:  # raise σ' to σ̂' for the next call: add EDM std sqrt(σ̂²-σ²)
            sig, sig_hat = churn
            std = self.config.s_noise * math.sqrt(sig_hat ** 2 - sig ** 2)
            eps = torch.randn(prev.shape, generator=generator, device=prev.device,
                              dtype=prev.dtype)
            ab_old, ab_new = 1 / (1 + sig * sig), 1 / (1 + sig_hat * sig_hat)
            prev = math.sqrt(ab_new) * (prev / math.sqrt(ab_old) + std * eps)
        self._step_index = k + 1
        prev, den = prev.to(dtype), den.to(dtype)
        if not return_dict:
            return (prev, den)
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=den)


# ----------------------------------------------------------------------------- adapters
def _is_mochi(transformer) -> bool:
    return type(transformer).__name__.startswith("Mochi")


def _sigma_batch(sigma, x) -> torch.Tensor:
    """``sigma`` (a float, 0-d, (1,) or (B,) tensor) as a (B,) tensor on ``x``'s device, the
    timestep shape diffusers transformers take (float32 unless ``sigma`` is float64)."""
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise TypeError(f"x must be a tensor with a batch dim 0, got {type(x).__name__}"
                        + (f" of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else ""))
    batch = x.shape[0]
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.tensor(check_float("sigma", sigma, low=0.0, allow_inf=True),
                             dtype=torch.float32)
    if sigma.is_complex() or sigma.dtype == torch.bool:
        _bad_sigma(sigma, batch)
    if not sigma.is_floating_point():
        sigma = sigma.to(torch.float32)
    if sigma.dim() > 1 or (sigma.dim() == 1 and sigma.shape[0] not in (1, batch)):
        _bad_sigma(sigma, batch)
    return sigma.to(x.device).reshape(-1).expand(batch)


def _bad_sigma(sigma, batch):
    raise ValueError(
        f"sigma must be a float, a 0-d tensor or a tensor of shape (B,) = ({batch},) (one "
        f"level per item), got dtype {sigma.dtype} and shape {tuple(sigma.shape)}"
    )


def _guided(transformer, x, t, guidance_scale, call_kwargs):
    if guidance_scale is None:
        return transformer(hidden_states=x, timestep=t, return_dict=False, **call_kwargs)[0]
    out = transformer(hidden_states=torch.cat([x, x]), timestep=torch.cat([t, t]),
                      return_dict=False, **call_kwargs)[0]
    uncond, cond = out.chunk(2)  # diffusers' batch order: [uncond; cond]
    return uncond + guidance_scale * (cond - uncond)


def as_flow_model(transformer, *, mochi: bool | None = None, num_train_timesteps: int = 1000,
                  guidance_scale: float | None = None, **call_kwargs):
    """A diffusers flow transformer as ``model(x, sigma) -> v`` (vidnoise's convention).

    The transformer is called as ``transformer(hidden_states=x, timestep=t,
    return_dict=False, **call_kwargs)[0]`` with ``t = N σ`` (diffusers FlowMatch) and its
    output is ``v = ε - x0``. Mochi (``mochi=True``, detected from the class name when
    ``None``) embeds the reversed time ``t = N (1 - σ)`` and predicts ``x0 - ε = -v``
    (:func:`vidnoise.conventions.sigma_to_mochi_timestep`, ``mochi_to_velocity``).
    ``guidance_scale``: batched classifier-free guidance; then ``call_kwargs`` hold the
    conditioning for ``[uncond; cond]`` (batch 2B) and ``v = v_u + g (v_c - v_u)``.
    The timestep is passed in ``sigma``'s dtype (float32 from the samplers) with shape
    ``(B,)``: ``sigma`` may be a float, a 0-d, ``(1,)`` or ``(B,)`` tensor.
    """
    check_callable("transformer", transformer)
    big_n = check_int("num_train_timesteps", num_train_timesteps, minimum=1)
    if mochi is None:
        mochi = _is_mochi(transformer)
    check_bool("mochi", mochi)
    if guidance_scale is not None:
        guidance_scale = check_float("guidance_scale", guidance_scale)

    def model(x, sigma):
        sigma = _sigma_batch(sigma, x)
        t = (1.0 - sigma) * big_n if mochi else sigma * big_n
        out = _guided(transformer, x, t, guidance_scale, call_kwargs)
        return -out if mochi else out

    return model


def as_denoiser(transformer, alphas_cumprod, prediction: str = "v", *,
                guidance_scale: float | None = None, round_timesteps: bool = True,
                **call_kwargs):
    """A diffusers VP transformer as an EDM denoiser ``D(x, sigma) -> x0`` (x = x0 + σ ε).

    ``abar = 1/(1 + σ²)``, the model sees ``x_vp = sqrt(abar) x`` at the timestep of σ in the
    table ``alphas_cumprod`` (a 1-D tensor, e.g. ``VPPath.alpha_bar`` or
    ``pipe.scheduler.alphas_cumprod``): linear in log σ between entries, rounded to the
    nearest integer when within 1e-3 of it (``round_timesteps``; the grids of
    :func:`vidnoise.schedules.vp_sigmas` sit on integers), computed on ``x``'s device without
    a sync. σ above the table's largest finite σ maps to the last timestep. ``prediction``:
    ``"v"`` (``x0 = sqrt(abar) x_vp - sqrt(1-abar) out``) or ``"epsilon"``
    (``x0 = (x_vp - sqrt(1-abar) out)/sqrt(abar)``). ``guidance_scale`` as in
    :func:`as_flow_model` ([uncond; cond]). ``sigma``: a float, a 0-d, ``(1,)`` or ``(B,)``
    tensor (the transformer gets a ``(B,)`` timestep).
    """
    check_callable("transformer", transformer)
    check_choice("prediction", prediction, ("v", "epsilon"))
    if not isinstance(alphas_cumprod, torch.Tensor) or alphas_cumprod.dim() != 1:
        raise TypeError(f"alphas_cumprod must be a 1-D tensor, got {type(alphas_cumprod)}")
    if guidance_scale is not None:
        guidance_scale = check_float("guidance_scale", guidance_scale)
    check_bool("round_timesteps", round_timesteps)
    ab = alphas_cumprod.detach().to("cpu", torch.float64)
    finite = ab > 0
    log_s = torch.log(torch.sqrt((1 - ab[finite]) / ab[finite]))  # increasing in t
    idx = torch.arange(len(ab), dtype=torch.float64)[finite]
    tables = {}

    def t_of(sigma):
        dev = sigma.device
        if dev not in tables:
            tables[dev] = (log_s.to(dev), idx.to(dev))
        ls, ix = tables[dev]
        q = torch.log(sigma.to(torch.float64)).clamp(ls[0], ls[-1])
        j = torch.searchsorted(ls, q).clamp(1, len(ls) - 1)
        lo, hi = ls[j - 1], ls[j]
        w = ((q - lo) / (hi - lo)).clamp(0, 1)
        t = ix[j - 1] + w * (ix[j] - ix[j - 1])
        t = torch.where(sigma.to(torch.float64) > ls[-1].exp(), ab.new_tensor(len(ab) - 1.0)
                        .to(dev), t)
        if round_timesteps:
            r = t.round()
            t = torch.where((t - r).abs() < 1e-3, r, t)
        return t

    def denoiser(x, sigma):
        sigma = _sigma_batch(sigma, x)
        s64 = sigma.to(torch.float64)
        abar = 1.0 / (1.0 + s64 * s64)
        shape = (-1,) + (1,) * (x.dim() - 1)
        c_in = abar.sqrt().to(x.dtype).reshape(shape)
        c_out = (1.0 - abar).sqrt().to(x.dtype).reshape(shape)
        x_vp = x * c_in
        t = t_of(sigma).to(torch.float32)
        out = _guided(transformer, x_vp, t, guidance_scale, call_kwargs).to(x.dtype)
        if prediction == "v":
            return c_in * x_vp - c_out * out
        return (x_vp - c_out * out) / c_in

    return denoiser
