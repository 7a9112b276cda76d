"""Shared fixtures for the sampler tests: mixtures, grids, slope fits."""

from __future__ import annotations

import math

import torch

from vidnoise.oracles import GaussianMixture


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """Karras grid computed here in float64 (independent of vidnoise.schedules), then 0."""
    if n == 1:
        return [sigma_max, 0.0]
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (n - 1) * (b - a)) ** rho for i in range(n)] + [0.0]


def linear(n: int) -> list[float]:
    return [1.0 - i / n for i in range(n)] + [0.0]


def mixture(dim: int, k: int = 4, seed: int = 0) -> GaussianMixture:
    """A fixed K-component mixture in ``dim`` dims: random means of typical separation 2
    (scaled by 1/sqrt(dim), so posteriors do not get sharper with the dimension) and
    random full covariances (eigenvalues in [0.02, 0.3])."""
    g = torch.Generator().manual_seed(seed)
    means = (2.0 / math.sqrt(dim)) * torch.randn(k, dim, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))
    lam = 0.02 + 0.28 * torch.rand(k, dim, generator=g, dtype=torch.float64)
    covs = q @ torch.diag_embed(lam) @ q.transpose(1, 2)
    covs = 0.5 * (covs + covs.transpose(1, 2))
    weights = torch.arange(1, k + 1, dtype=torch.float64)
    return GaussianMixture(weights, means, covs)


def loglog_slope(ns, errs) -> float:
    """Least-squares slope of log(err) against log(n)."""
    x = [math.log(n) for n in ns]
    y = [math.log(e) for e in errs]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


def mean_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).flatten(1).norm(dim=1).mean())


def flow_velocity(gm: GaussianMixture):
    """``gm.velocity`` extended to σ = 0 by its limit ``v(x, 0) = E[ε - x0 | x0 = x] = -x``
    (ε is independent of x0), so that a Heun step corrected into σ = 0 can use it."""

    def v(x, sigma):
        zero = sigma == 0
        safe = torch.where(zero, torch.ones_like(sigma), sigma)
        return torch.where(zero.reshape(-1, *([1] * (x.dim() - 1))), -x, gm.velocity(x, safe))

    return v


def gaussian_flow(mean: float, std: float):
    """Exact flow velocity for data x0 ~ N(mean, std²) (each coordinate):
    x_σ ~ N(μ, a) with μ = (1-σ)·mean, a = (1-σ)²std² + σ², and the flow keeps
    (x - μ)/√a constant, so ``v = dμ/dσ + a'/(2a)·(x - μ)`` (a' = -2(1-σ)std² + 2σ) and the
    exact endpoint from noise ε at σ = 1 is ``mean + std·ε``."""

    def v(x, sigma):
        s = sigma.to(torch.float64).reshape(-1, *([1] * (x.dim() - 1)))
        a = (1 - s) ** 2 * std * std + s * s
        da = -2 * (1 - s) * std * std + 2 * s
        return (-mean + da / (2 * a) * (x - (1 - s) * mean)).to(x.dtype)

    return v


def k_diffusion_sampling():
    """k-diffusion's own ``sampling`` module, loaded from its installed file, or None.

    k-diffusion 0.1.1's package ``__init__`` imports torchvision, scikit-image and jsonmerge
    (training and evaluation code); its samplers need only torch, scipy, torchdiffeq, tqdm and
    ``utils.append_dims``. So the file ``k_diffusion/sampling.py`` is executed as is, with its
    ``from . import utils`` answered by a package holding k-diffusion's three-line
    ``append_dims`` and, when torchsde is missing, an empty ``torchsde`` (used only by the SDE
    samplers, which are not compared).
    """
    import importlib.util
    import sys
    import types
    from pathlib import Path

    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "sampling.py"
    try:
        import torchdiffeq  # noqa: F401
    except ImportError:
        return None
    pkg = types.ModuleType("_kdiffusion_samplers")
    pkg.__path__ = []
    utils = types.ModuleType("_kdiffusion_samplers.utils")

    def append_dims(x, target_dims):  # k_diffusion/utils.py, append_dims
        dims_to_append = target_dims - x.ndim
        if dims_to_append < 0:
            raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}")
        return x[(...,) + (None,) * dims_to_append]

    utils.append_dims = append_dims
    pkg.utils = utils
    saved = {k: sys.modules.get(k) for k in ("_kdiffusion_samplers", "torchsde")}
    sys.modules["_kdiffusion_samplers"] = pkg
    sys.modules["_kdiffusion_samplers.utils"] = utils
    if saved["torchsde"] is None:
        try:
            import torchsde  # noqa: F401
        except ImportError:
            sys.modules["torchsde"] = types.ModuleType("torchsde")
    try:
        mspec = importlib.util.spec_from_file_location("_kdiffusion_samplers.sampling", path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
    finally:
        if saved["torchsde"] is None and isinstance(sys.modules.get("torchsde"), types.ModuleType) \
                and not hasattr(sys.modules["torchsde"], "BrownianTree"):
            del sys.modules["torchsde"]
    return mod


class MixtureProblems(dict):
    """Per dim: a Gaussian mixture, fixed float64 noise (seed 7; batch 256 at dim 2, else 64)
    and a fine reference ``reference(gm, noise)``, built on first use (a module fixture)."""

    def __init__(self, reference):
        super().__init__()
        self._reference = reference

    def __missing__(self, dim):
        gm = mixture(dim, seed=dim)
        batch = 256 if dim == 2 else 64
        noise = torch.randn(batch, dim, generator=torch.Generator().manual_seed(7),
                            dtype=torch.float64)
        self[dim] = (gm, noise, self._reference(gm, noise))
        return self[dim]
