from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sgl_kernel import cpu_ops

from sglang.srt.layers import cpu_fused


class SiluAndMul(nn.Module):
    """silu(gate) * up for a merged [.., 2 * I] gate_up projection."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_fused.applies(x) and x.stride(-1) == 1:
            return cpu_ops.silu_and_mul(x)
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
