"""Vocabulary-parallel embedding and LM head.

Each rank holds a contiguous block of ceil(vocab / tp) rows (the last block padded with
zero rows). The embedding looks up the ids in its block, zeroes the others and
all-reduces; the head computes its block's logits and all-gathers them, so every rank
gets byte-identical logits (the schedulers of all ranks sample the same tokens). Both
share the same block layout, so tied embeddings stay one tensor. With tp 1 they are a
plain embedding and a plain linear.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sglang.srt.layers import cpu_gemm
from sglang.srt.distributed import (
    get_tp_rank,
    get_tp_size,
    tensor_model_parallel_all_gather,
    tensor_model_parallel_all_reduce,
)


class _VocabShard(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.per_rank = -(-vocab_size // self.tp_size)
        self.start = self.tp_rank * self.per_rank
        self.end = min(self.start + self.per_rank, vocab_size)
        self.weight = nn.Parameter(torch.empty(self.per_rank, hidden_size))

    def load_full(self, param: str, tensor: torch.Tensor) -> None:
        if param != "weight" or tuple(tensor.shape) != (self.vocab_size, self.hidden_size):
            raise ValueError(f"has shape {tuple(tensor.shape)}, expected {(self.vocab_size, self.hidden_size)}")
        n = max(0, self.end - self.start)
        self.weight.data[:n].copy_(tensor[self.start : self.end])
        self.weight.data[n:].zero_()


class VocabParallelEmbedding(_VocabShard):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(ids, self.weight)
        inside = (ids >= self.start) & (ids < self.end)
        local = torch.where(inside, ids - self.start, torch.zeros_like(ids))
        out = F.embedding(local, self.weight) * inside.unsqueeze(-1).to(self.weight.dtype)
        return tensor_model_parallel_all_reduce(out)


class ParallelLMHead(_VocabShard):
    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__(vocab_size, hidden_size)
        self.packed_weight: torch.Tensor | None = None  # set by cpu_gemm.prepack_linear_weights

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = cpu_gemm.linear(h, self.weight, self.packed_weight)
        if self.tp_size == 1:
            return logits
        return tensor_model_parallel_all_gather(logits, dim=-1)[..., : self.vocab_size]
