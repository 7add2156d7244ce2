"""RMSNorm with an optional fused residual add (the residual stream is kept in float32 math)."""
from __future__ import annotations

import torch
from torch import nn

from sgl_kernel import cpu_ops

from sglang.srt.layers import cpu_fused


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        # Same op order as transformers' LlamaRMSNorm so float32 results match bit for bit.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if cpu_fused.applies(x) and self.weight.dtype == torch.float32 and x.stride(-1) == 1:
            # fused add + norm: one pass, one call
            if residual is None:
                return cpu_ops.rms_norm(x, self.weight, self.eps)
            if residual.dtype == torch.float32 and residual.shape == x.shape and residual.stride(-1) == 1:
                return cpu_ops.add_rms_norm(x, residual, self.weight, self.eps)
        if residual is None:
            return self._norm(x)
        x = x + residual
        return self._norm(x), x
