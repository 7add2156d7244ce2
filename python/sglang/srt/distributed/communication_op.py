"""Collectives over the tp group; identity when tp is 1.

All of them are safe inside a CUDA graph on NCCL (fixed shapes, no host syncs).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from sglang.srt.distributed.parallel_state import get_tp_group


def tensor_model_parallel_all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum x over the tp ranks, in place; returns x."""
    g = get_tp_group()
    if g.size == 1:
        return x
    dist.all_reduce(x, group=g.device_group)
    return x


def tensor_model_parallel_all_gather(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Concatenate every rank's x along dim (rank order). Every rank gets the same bytes."""
    g = get_tp_group()
    if g.size == 1:
        return x
    x = x.contiguous()
    if x.is_cuda:
        out = torch.empty((g.size, *x.shape), dtype=x.dtype, device=x.device)
        dist.all_gather_into_tensor(out, x, group=g.device_group)
        parts = out.unbind(0)
    else:
        parts = [torch.empty_like(x) for _ in range(g.size)]
        dist.all_gather(parts, x, group=g.device_group)
    return torch.cat(parts, dim=dim)


def broadcast_objects(objs: list[Any] | None, src: int = 0) -> list[Any]:
    """Rank src sends a list of picklable objects; every rank returns it (over gloo)."""
    g = get_tp_group()
    if g.size == 1:
        return list(objs or [])
    box = [objs if g.rank == src else None]
    dist.broadcast_object_list(box, src=src, group=g.cpu_group)
    return list(box[0] or [])
