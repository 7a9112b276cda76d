"""Checkpoints that survive kills: safetensors tensors plus a JSON of everything else.

A checkpoint is a folder holding

* ``weights.safetensors``: every tensor (``model.*`` weights, ``ema.*`` weights,
  ``optim.<param index>.<name>`` optimizer state tensors), exactly as float32 bits;
* ``state.json``: the configs, the step, the optimizer's non-tensor state (param groups),
  the RNG states (base64 of ``torch.Generator.get_state()``), and the file's format version.

**Saving** (:func:`save_checkpoint`) never deletes a complete checkpoint before a newer
complete one has its name:

1. :func:`recover_checkpoint`: if ``<name>`` is missing (a kill between the renames of an
   earlier save), the newest complete candidate (``<name>.old`` or a ``.<name>.tmp-*``
   folder) is renamed to ``<name>``;
2. the weights, then ``state.json`` (written as ``state.json.part``, fsync'ed, renamed), go
   into a fresh ``.<name>.tmp-*`` folder: ``state.json`` exists only in a complete folder;
3. ``<name>`` -> ``<name>.old``, the temporary folder -> ``<name>``, fsync of the parent;
4. only then ``<name>.old`` and every stale ``.<name>.tmp-*`` folder are removed.

A kill at any point leaves at least one complete checkpoint (the previous or the new one)
under one of those names, and the next load or save finds the newest. An exception while
writing (disk full, ...) removes the temporary folder and leaves ``<name>`` untouched.
Files are created with mode 0644 and folders with 0755 (whatever the umask of ``mkdtemp``).

Every filesystem mutation of a save goes through one hook (:data:`MUTATIONS` counts them);
with the environment variable ``VIDNOISE_CRASH_AT=k`` the process dies (``os._exit(137)``,
no clean-up, like a kill) just before its ``k``-th mutation (1-based). The crash-consistency
test kills a run at each of them.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from vidnoise.demo._errors import DemoError

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "find_checkpoint",
    "recover_checkpoint",
    "lock_folder",
    "checkpoint_mismatch",
    "encode_rng",
    "decode_rng",
    "optimizer_to_flat",
    "optimizer_from_flat",
    "FORMAT",
]

FORMAT = "vidnoise-demo-checkpoint/1"
WEIGHTS = "weights.safetensors"
STATE = "state.json"
FILE_MODE = 0o644
DIR_MODE = 0o755

MUTATIONS = 0  # filesystem mutations made by this process's saves (for crash tests)
_CRASH_AT = int(os.environ.get("VIDNOISE_CRASH_AT", "0") or 0)


def _mutation() -> None:
    """Count one filesystem mutation; die here if ``VIDNOISE_CRASH_AT`` names it."""
    global MUTATIONS
    MUTATIONS += 1
    if _CRASH_AT and MUTATIONS == _CRASH_AT:
        os._exit(137)


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
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars,
                     "tensor_names": sorted(tensors)}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict, rest: dict) -> None:
    """Load what :func:`optimizer_to_flat` produced into ``opt``.

    Raises :class:`~vidnoise.demo.DemoError` when a tensor that the state lists is missing
    (caught here, not at the first optimizer step).
    """
    missing = sorted(set(rest.get("tensor_names", [])) - set(tensors))
    if missing:
        raise DemoError(f"optimizer tensor {missing[0]} is missing"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    state: dict = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for key, value in rest.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    names = set().union(*(st.keys() for st in state.values())) if state else set()
    for idx, st in sorted(state.items()):
        if not 0 <= idx < n_params:
            raise DemoError(f"optimizer state for parameter {idx}, the model has {n_params}")
        if set(st) != names:  # checkpoints written before tensor_names was stored
            raise DemoError(f"optimizer tensor optim.{idx}.{sorted(names - set(st))[0]} "
                            "is missing")
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def checkpoint_mismatch(path, exc: BaseException) -> DemoError:
    """The one error for a checkpoint whose contents do not fit this code or its config."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, DemoError):
        return DemoError(f"checkpoint {str(path)!r}: {text}")
    return DemoError(
        f"checkpoint {str(path)!r} does not match this code: {type(exc).__name__}: {text}"
    )


# ----------------------------------------------------------------------------- recovery
def _read_state(folder: Path) -> dict | None:
    """The state of a complete checkpoint folder, or None (incomplete, corrupt, missing)."""
    try:
        if not (folder / WEIGHTS).is_file():
            return None
        with open(folder / STATE, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None
    return state


def _candidates(path: Path) -> list[Path]:
    """``<name>.old`` and every ``.<name>.tmp-*`` folder next to ``path``."""
    parent = path.parent
    out = [path.with_name(path.name + ".old")]
    if parent.is_dir():
        out += sorted(parent.glob(f".{path.name}.tmp-*"))
    return [p for p in out if p.is_dir()]


def _newest(folders) -> tuple[Path, dict] | None:
    best = None
    for folder in folders:
        state = _read_state(folder)
        if state is None:
            continue
        key = (int(state.get("step", 0) or 0), state.get("saved_ns", 0) or 0)
        if best is None or key > best[0]:
            best = (key, folder, state)
    return None if best is None else (best[1], best[2])


def find_checkpoint(path) -> Path | None:
    """The folder holding the checkpoint named ``path``, without changing anything.

    ``path`` itself when it is complete; else (a save was killed between its renames) the
    newest complete ``<name>.old`` or ``.<name>.tmp-*`` folder (also when one of them is
    newer than ``path``: a save killed after writing); None when there is none.
    """
    found = _newest([Path(path), *_candidates(Path(path))])
    return None if found is None else found[0]


def recover_checkpoint(path) -> Path | None:
    """Give ``path`` back its newest complete checkpoint (renames only, deletes nothing).

    When a complete candidate newer than ``path`` exists (see :func:`find_checkpoint`),
    ``path`` (if any) is moved aside to a ``.tmp-`` name (so
    the next successful save removes it) and the candidate is renamed to ``path``.
    Returns ``path`` if it now holds a complete checkpoint, else None.
    """
    path = Path(path)
    found = _newest([path, *_candidates(path)])
    if found is None:
        return None
    if found[0] == path:
        return path
    if path.exists():
        aside = Path(tempfile.mktemp(prefix=f".{path.name}.tmp-broken-", dir=path.parent))
        _mutation()
        os.rename(path, aside)
    _mutation()
    os.rename(found[0], path)
    _fsync_dir(path.parent)
    return path


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


def _write_error(path: Path, exc: BaseException) -> DemoError:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full"
    else:
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return DemoError(f"cannot save checkpoint {str(path)!r}: {why} "
                     "(the previous checkpoint, if any, is kept)")


def save_checkpoint(path, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    """Write ``tensors`` and ``state`` to the checkpoint folder ``path`` (see the module doc).

    A failure to write (disk full, an unwritable folder, a failing writer) raises
    :class:`~vidnoise.demo.DemoError` with one line; ``path`` is then unchanged. A ``state``
    that JSON cannot encode raises the encoder's TypeError (a programming error).
    """
    from safetensors.torch import save_file

    path = Path(path)
    old = path.with_name(path.name + ".old")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        recover_checkpoint(path)
        flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        text = json.dumps({"format": FORMAT, **state}, indent=1, sort_keys=True)
        _mutation()
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        os.chmod(tmp, DIR_MODE)
        _mutation()
        save_file(flat, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        os.chmod(tmp / WEIGHTS, FILE_MODE)
        with open(tmp / WEIGHTS, "rb") as f:
            os.fsync(f.fileno())
        _mutation()
        with open(tmp / (STATE + ".part"), "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp / (STATE + ".part"), FILE_MODE)
        _mutation()
        os.rename(tmp / (STATE + ".part"), tmp / STATE)  # now the folder is complete
        _fsync_dir(tmp)
        if old.exists():  # path is complete here (recovered above), so old is redundant
            _mutation()
            shutil.rmtree(old)
        if path.exists():
            _mutation()
            os.rename(path, old)
        _mutation()
        os.rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        if tmp is not None and tmp.exists() and not (tmp / STATE).exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        if type(exc).__name__ == "SafetensorError":
            raise _write_error(path, exc) from None
        raise
    for stale in [old, *path.parent.glob(f".{path.name}.tmp-*")]:
        if stale.exists():
            _mutation()
            shutil.rmtree(stale, ignore_errors=True)
    return path


def load_checkpoint(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint folder written by :func:`save_checkpoint`: (tensors, state).

    A killed save is recovered from on the fly (:func:`find_checkpoint`, nothing renamed).
    Raises :class:`~vidnoise.demo.DemoError` with one clear line when the folder is missing,
    incomplete or corrupt, or when an optimizer tensor it lists is missing.
    """
    path = Path(path)
    if path.is_file():
        raise DemoError(
            f"checkpoint {str(path)!r} is a file; a checkpoint is a folder with "
            f"{WEIGHTS} and {STATE}"
        )
    found = find_checkpoint(path)
    if found is not None:
        path = found
    elif not path.exists():
        raise DemoError(f"checkpoint {str(path)!r} does not exist")
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
    names = (state.get("optimizer") or {}).get("tensor_names") if isinstance(
        state.get("optimizer"), dict) else None
    if names:
        missing = sorted(set(names) - set(tensors))
        if missing:
            raise DemoError(f"checkpoint {str(path)!r} is corrupt: optimizer tensor "
                            f"{missing[0]} is missing from {WEIGHTS}")
    return tensors, state


# ----------------------------------------------------------------------------- lock
class _FolderLock:
    def __init__(self, fd: int, folder: Path):
        self.fd, self.folder = fd, folder

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock_folder(folder) -> _FolderLock:
    """Take an exclusive lock on the output folder ``folder`` (``folder/.lock``, flock).

    The lock dies with the process (kill included). Raises
    :class:`~vidnoise.demo.DemoError` naming the folder when another run holds it, or when
    the folder cannot be created or written (an existing file, no permission).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DemoError(f"output folder {str(folder)!r} is an existing file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise DemoError(f"output folder {str(folder)!r} is not writable: "
                        f"{exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DemoError(f"output folder {str(folder)!r} is in use by another vidnoise run "
                        "(wait for it, or give another --out)") from None
    if not os.access(folder, os.W_OK):  # e.g. root-owned folder with our lock file in it
        os.close(fd)
        raise DemoError(f"output folder {str(folder)!r} is not writable")
    return _FolderLock(fd, folder)
