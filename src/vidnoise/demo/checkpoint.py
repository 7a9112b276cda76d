"""Atomic checkpoints: safetensors tensors plus a JSON of everything else.

A checkpoint is a folder holding

* ``weights.safetensors``: every tensor (``model.*`` weights, ``ema.*`` weights,
  ``optim.<param index>.<name>`` optimizer state tensors), exactly as float32 bits;
* ``state.json``: the configs, the step, the optimizer's non-tensor state (param groups),
  the RNG states (base64 of ``torch.Generator.get_state()``), and the file's format version.

Saving is atomic: both files are written and fsync'ed into a fresh temporary folder next to
the target, which then replaces the target by renames (old -> ``<name>.old``, new -> name,
then ``.old`` is removed). An exception while writing (disk full, a bad value, ...) removes
the temporary folder and leaves an existing checkpoint untouched; a crash between the two
renames leaves ``<name>.old`` intact, and :func:`load_checkpoint` falls back to it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from vidnoise.demo import DemoError

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "encode_rng",
    "decode_rng",
    "optimizer_to_flat",
    "optimizer_from_flat",
    "FORMAT",
]

FORMAT = "vidnoise-demo-checkpoint/1"
WEIGHTS = "weights.safetensors"
STATE = "state.json"


def encode_rng(state: torch.Tensor) -> str:
    """A generator state (uint8 tensor) as base64 text."""
    return base64.b64encode(bytes(state.to(torch.uint8).tolist())).decode("ascii")


def decode_rng(text: str) -> torch.Tensor:
    """Inverse of :func:`encode_rng`."""
    return torch.tensor(list(base64.b64decode(text.encode("ascii"))), dtype=torch.uint8)


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer state dict into (tensors, json-able rest)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().clone().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict, rest: dict) -> None:
    """Load what :func:`optimizer_to_flat` produced into ``opt``."""
    state: dict = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for key, value in rest.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(path, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    """Write ``tensors`` and ``state`` to the checkpoint folder ``path``, atomically.

    Raises whatever the writers raise; in that case nothing at ``path`` has changed.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    old = path.with_name(path.name + ".old")
    try:
        flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(flat, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        text = json.dumps({"format": FORMAT, **state}, indent=1, sort_keys=True)
        with open(tmp / STATE, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / WEIGHTS, "rb") as f:
            os.fsync(f.fileno())
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint folder written by :func:`save_checkpoint`: (tensors, state).

    Raises :class:`~vidnoise.demo.DemoError` with one clear line when the folder is missing,
    incomplete or corrupt.
    """
    path = Path(path)
    if not path.exists():
        old = path.with_name(path.name + ".old")
        if old.is_dir():  # a crash between the renames of a save: the previous one is whole
            path = old
        else:
            raise DemoError(f"checkpoint {str(path)!r} does not exist")
    if path.is_file():
        raise DemoError(
            f"checkpoint {str(path)!r} is a file; a checkpoint is a folder with "
            f"{WEIGHTS} and {STATE}"
        )
    for name in (WEIGHTS, STATE):
        if not (path / name).is_file():
            raise DemoError(f"checkpoint {str(path)!r} is incomplete: {name} is missing")
    try:
        with open(path / STATE, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DemoError(f"checkpoint {str(path)!r} is corrupt: {STATE}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DemoError(
            f"checkpoint {str(path)!r} is not a vidnoise demo checkpoint "
            f"(format {state.get('format') if isinstance(state, dict) else None!r}, "
            f"expected {FORMAT!r})"
        )
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(path / WEIGHTS))
    except ImportError as exc:  # pragma: no cover
        raise DemoError("checkpoints need safetensors: pip install 'vidnoise[demo]'") from exc
    except Exception as exc:
        raise DemoError(
            f"checkpoint {str(path)!r} is corrupt: {WEIGHTS}: {type(exc).__name__}: {exc}"
        ) from None
    return tensors, state
