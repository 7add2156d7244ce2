"""Linear layers that load checkpoint tensors into merged and tensor-parallel weights.

q/k/v and gate/up are merged into one matmul each (fewer, larger GEMMs are faster on
both CPU and GPU); ``load_shard`` places a checkpoint tensor at its offset.

Tensor parallelism (Megatron style): ``MergedLinear`` is column-parallel (each rank keeps
its 1/tp of every shard's output rows, so no communication), ``RowParallelLinear`` keeps
1/tp of the input columns and sums the partial outputs over the ranks. A column-parallel
layer followed by a row-parallel one costs one all-reduce. With tp 1 both are plain
``F.linear`` on the full weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sglang.srt.layers import cpu_gemm
from sglang.srt.distributed import divide, get_tp_rank, get_tp_size, tensor_model_parallel_all_reduce


class MergedLinear(nn.Linear):
    """A column-parallel Linear whose output rows are the concatenation of named shards.

    ``shard_sizes`` are the full (checkpoint) sizes; this rank holds rows
    [rank * size/tp, (rank + 1) * size/tp) of each shard.
    """

    def __init__(self, in_features: int, shard_sizes: dict[str, int], bias: bool = False) -> None:
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()
        local = {n: divide(s, self.tp_size, f"the {n} output size") for n, s in shard_sizes.items()}
        super().__init__(in_features, sum(local.values()), bias=bias)
        self.full_sizes = dict(shard_sizes)
        self.offsets: dict[str, tuple[int, int]] = {}
        self.packed_weight: torch.Tensor | None = None  # set by cpu_gemm.prepack_linear_weights
        start = 0
        for name, size in local.items():
            self.offsets[name] = (start, size)
            start += size

    def load_shard(self, shard: str, param: str, tensor: torch.Tensor) -> None:
        start, size = self.offsets[shard]
        target = self.weight if param == "weight" else self.bias
        if tensor.shape[0] != self.full_sizes[shard]:
            raise ValueError(f"shard {shard}.{param} has {tensor.shape[0]} rows, expected {self.full_sizes[shard]}")
        if target is None:
            raise ValueError(f"shard {shard} has no {param}")
        lo = self.tp_rank * size
        target.data[start : start + size].copy_(tensor[lo : lo + size])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_gemm.linear(x, self.weight, self.packed_weight, self.bias)


class RowParallelLinear(nn.Module):
    """y = x W^T + b where x arrives split by columns over the ranks (the output of a
    column-parallel layer): each rank multiplies its slice, the sum is all-reduced."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()
        self.in_features, self.out_features = in_features, out_features
        self.in_local = divide(in_features, self.tp_size, "the row-parallel input size")
        self.weight = nn.Parameter(torch.empty(out_features, self.in_local))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.packed_weight: torch.Tensor | None = None  # set by cpu_gemm.prepack_linear_weights

    def load_full(self, param: str, tensor: torch.Tensor) -> None:
        """Copy this rank's columns of a full checkpoint tensor."""
        if param == "bias":
            if self.bias is None or tensor.shape != self.bias.shape:
                raise ValueError(f"bias of shape {tuple(tensor.shape)} does not fit")
            self.bias.data.copy_(tensor)
            return
        if tuple(tensor.shape) != (self.out_features, self.in_features):
            raise ValueError(f"has shape {tuple(tensor.shape)}, expected {(self.out_features, self.in_features)}")
        lo = self.tp_rank * self.in_local
        self.weight.data.copy_(tensor[:, lo : lo + self.in_local])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = tensor_model_parallel_all_reduce(cpu_gemm.linear(x, self.weight, self.packed_weight))
        return y if self.bias is None else y + self.bias
