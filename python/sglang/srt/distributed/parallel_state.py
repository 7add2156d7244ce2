"""Tensor-parallel process group: which rank this process is, and the groups to talk over.

One group per engine: NCCL for tensors on GPUs, gloo on CPU; a gloo group always exists
next to it for Python objects (the scheduler's per-step request broadcast). With tp 1
nothing is initialized and every helper is a no-op, so single-process use (tests, the
offline engine) never touches torch.distributed.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TPGroup:
    rank: int = 0
    size: int = 1
    device_group: Any = None  # NCCL (cuda) or gloo (cpu) group for tensors
    cpu_group: Any = None  # gloo group for Python objects


_TP = TPGroup()


def init_tensor_parallel(tp_size: int, rank: int, init_method: str | None, device: torch.device,
                         timeout_s: float = 1800.0) -> TPGroup:
    """Join the tp group (blocks until every rank has joined). tp_size 1: no-op."""
    global _TP
    if tp_size < 1 or not 0 <= rank < tp_size:
        raise ValueError(f"tp rank {rank} is outside 0..{tp_size - 1}")
    if tp_size == 1:
        _TP = TPGroup()
        return _TP
    if init_method is None:
        raise ValueError("--tp > 1 needs a rendezvous address for the ranks")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend, init_method=init_method, world_size=tp_size, rank=rank, timeout=timeout)
    group = dist.group.WORLD
    cpu_group = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else group
    _TP = TPGroup(rank, tp_size, group, cpu_group)
    return _TP


def destroy_tensor_parallel() -> None:
    global _TP
    if _TP.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
    _TP = TPGroup()


def get_tp_group() -> TPGroup:
    return _TP


def get_tp_rank() -> int:
    return _TP.rank


def get_tp_size() -> int:
    return _TP.size


def divide(n: int, parts: int, what: str) -> int:
    """n / parts, or a clear error naming what cannot be split."""
    if n % parts:
        raise ValueError(f"--tp {parts}: {what} ({n}) is not divisible by the tensor parallel size")
    return n // parts
