"""DistributedDataParallel under torchrun: ranks, the process group (nccl on GPUs, gloo on CPU),
the training device of this rank, and agreement between ranks."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..devices import pick_device


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device_pref: str) -> tuple[int, int, int]:
    rank, world, local = dist_info()
    if world > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_pref != "cpu"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, local


def training_device(device_pref: str, world: int, local: int) -> torch.device:
    if world > 1 and torch.cuda.is_available() and device_pref != "cpu":
        return torch.device(f"cuda:{local}")
    return pick_device(device_pref)


def device_text(device, world: int) -> str:
    if device.type == "cuda":
        return f"{world}x {torch.cuda.get_device_name(device)}"
    return f"cpu{'' if world == 1 else f' x{world} (gloo)'}"


def any_rank(flag: bool, world: int) -> bool:
    """True on every rank when `flag` is true on any (all ranks stop at the same step)."""
    t = torch.tensor([1.0 if flag else 0.0])
    if world > 1:
        dist.all_reduce(t)
    return bool(t.item() > 0)


def from_rank0(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.broadcast(values, 0)
    return values


def barrier(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.barrier()


def shut_down(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
