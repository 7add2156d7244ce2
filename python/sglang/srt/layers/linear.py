"""Linear layers that know how to load checkpoint shards into merged weights.

q/k/v and gate/up are merged into one matmul each (fewer, larger GEMMs are faster on
both CPU and GPU); ``load_shard`` places a checkpoint tensor at its offset.
"""
from __future__ import annotations

import torch
from torch import nn


class MergedLinear(nn.Linear):
    """A Linear whose output rows are the concatenation of named shards."""

    def __init__(self, in_features: int, shard_sizes: dict[str, int], bias: bool = False) -> None:
        super().__init__(in_features, sum(shard_sizes.values()), bias=bias)
        self.offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, size in shard_sizes.items():
            self.offsets[name] = (start, size)
            start += size

    def load_shard(self, shard: str, param: str, tensor: torch.Tensor) -> None:
        start, size = self.offsets[shard]
        target = self.weight if param == "weight" else self.bias
        if tensor.shape[0] != size:
            raise ValueError(f"shard {shard}.{param} has {tensor.shape[0]} rows, expected {size}")
        target.data[start : start + size].copy_(tensor)
