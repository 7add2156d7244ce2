"""Mixture-of-experts MLP (Qwen3-MoE): softmax router, top-k experts, optional renormalization.

Tensor parallelism splits every expert's intermediate size over the ranks (the router is
replicated, so all ranks route alike): each rank computes its slice of every routed
expert and the partial outputs are all-reduced, like a column- then row-parallel MLP.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sglang.srt.distributed import divide, get_tp_rank, get_tp_size, tensor_model_parallel_all_reduce


class SparseMoE(nn.Module):
    def __init__(self, hidden: int, inter: int, num_experts: int, top_k: int, norm_topk_prob: bool) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()
        self.full_inter = inter
        inter = divide(inter, self.tp_size, "moe_intermediate_size")
        self.num_experts, self.top_k, self.norm_topk_prob, self.inter = num_experts, top_k, norm_topk_prob, inter
        self.gate = nn.Linear(hidden, num_experts, bias=False)
        # Stacked expert weights: w13[e] = [gate; up] (2I x H), w2[e] = down (H x I).
        self.w13 = nn.Parameter(torch.empty(num_experts, 2 * inter, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, inter))
        # Routing of the last forward, read by attention capture (MoE tab); [T, top_k] each.
        self.last_topk_ids: torch.Tensor | None = None
        self.last_topk_weights: torch.Tensor | None = None

    def load_expert(self, expert: int, proj: str, tensor: torch.Tensor) -> None:
        """Full checkpoint tensors (gate/up [I, H], down [H, I]): keep this rank's slice of I."""
        lo, n = self.tp_rank * self.inter, self.inter
        if proj in ("gate_proj", "up_proj"):
            if tensor.shape[0] != self.full_inter:
                raise ValueError(f"expert {expert} {proj} has {tensor.shape[0]} rows, expected {self.full_inter}")
            dst = self.w13.data[expert, :n] if proj == "gate_proj" else self.w13.data[expert, n:]
            dst.copy_(tensor[lo : lo + n])
        else:
            if tensor.shape[-1] != self.full_inter:
                raise ValueError(f"expert {expert} down_proj has {tensor.shape[-1]} columns, expected {self.full_inter}")
            self.w2.data[expert].copy_(tensor[:, lo : lo + n])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.gate(x)
        probs = F.softmax(logits, dim=-1, dtype=torch.float)
        weights, ids = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(x.dtype)
        self.last_topk_ids, self.last_topk_weights = ids, weights
        out = torch.zeros_like(x)
        # Loop over the experts that got tokens (CPU-friendly; a grouped GEMM kernel can replace this).
        flat_ids = ids.flatten()
        order = torch.argsort(flat_ids, stable=True)
        counts = torch.bincount(flat_ids, minlength=self.num_experts).tolist()
        token_of = order // self.top_k
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            sel = order[start : start + n]
            tok = token_of[start : start + n]
            start += n
            h = x[tok] @ self.w13[e].t()
            gate, up = h.chunk(2, dim=-1)
            y = (F.silu(gate) * up) @ self.w2[e].t()
            w = weights.flatten()[sel].unsqueeze(-1)
            out.index_add_(0, tok, y * w)
        return tensor_model_parallel_all_reduce(out)
