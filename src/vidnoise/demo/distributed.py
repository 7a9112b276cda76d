"""Distributed set-up of the demo trainer (``torchrun``: gloo on CPU, nccl on CUDA).

Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE > 1``) the loss module is wrapped in
:class:`torch.nn.parallel.DistributedDataParallel`, each rank draws its own clips and noise
(per-rank seeds), gradients are averaged by DDP, every rank stops at the same step, and only
rank 0 writes checkpoints (after gathering every rank's generator state).
"""

from __future__ import annotations

import os

import torch

__all__ = ["dist_info", "init_distributed", "any_rank", "gather_objects", "barrier"]


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment variables (0, 1 without it)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str | None) -> tuple[str, bool]:
    """Start the process group under torchrun: (device to use, whether it was started here)."""
    import torch.distributed as dist

    rank, ws = dist_info()
    use_cuda = torch.cuda.is_available() and device != "cpu"
    started = False
    if ws > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        started = True
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}", started
    return device or "cpu", started


def any_rank(flag: bool, world: int, device) -> bool:
    """True on every rank if ``flag`` is true on any rank (one all-reduce; local otherwise)."""
    if world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def gather_objects(obj, world: int) -> list:
    """Every rank's ``obj`` (a list of one without a process group)."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
