"""Attention sinks: how much of each query row's attention goes to the first positions, and
what the rest of the row looks like without them.

Most decoder LMs park a large share of every head's attention on the first token(s) of the
sequence (an "attention sink"). Given the heads' exact lse over the row's window (capture's
first pass), the probability of a sink key is local: exp(s_j - lse). So every quantity of
the sink keys is one small product with those keys per row, exact, whatever the context
length. Plain torch (a few keys per row); float32 math like the kernels.

``sink_terms`` returns what the version-2 fingerprint needs to take the sink out of a
row's statistics after the fact (capture_common.fingerprint_v2):

* ``mass`` [N, H]: each head's probability on the unmasked sink keys (the reported
  ``sink_mass`` is its mean over heads; private keys never show in it);
* ``bins`` [N, 16]: that head-averaged unmasked sink mass per distance bin, to subtract
  from the histogram (which covers the unmasked keys);
* ``all_mass`` / ``all_plogp`` [N, H]: each head's probability and -sum p log p over every
  sink key of the window, masked or not, to take them out of the entropy (which covers
  every key of the window);
* ``count`` [N]: the number of sink keys in the window.

On CPU with float32 tensors ``sink_terms`` runs the same math in C++ (``csrc/sinks_cpu.cpp``,
one call instead of ~25 small torch ops: capture calls it per captured layer and head
group every step); ``sink_terms_ref`` is the torch definition, used everywhere else and
with ``SGLANG_CPU_FUSED_OPS=0``, and the tests hold the two together.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sgl_kernel.capture_common import softcap_
from sgl_kernel.zones import N_HIST_BINS


@dataclass
class SinkTerms:
    mass: torch.Tensor  # [N, H] float32 per-head p on unmasked sink keys
    bins: torch.Tensor  # [N, 16] float32 head-averaged unmasked sink mass per distance bin
    all_mass: torch.Tensor  # [N, H] float32 per-head p on every sink key of the window
    all_plogp: torch.Tensor  # [N, H] float32 per-head -sum p log p over those keys
    count: torch.Tensor  # [N] int64 sink keys in the window

    @property
    def sink_mass(self) -> torch.Tensor:
        """[N] the reported sink_mass: unmasked sink probability, mean over heads."""
        return self.mass.mean(-1)

    @staticmethod
    def cat(terms: "list[SinkTerms]") -> "SinkTerms":
        """The rows of several SinkTerms, in order (one per layer of a layer-major batch)."""
        if len(terms) == 1:
            return terms[0]
        return SinkTerms(*(torch.cat([getattr(t, f) for t in terms]) for f in
                           ("mass", "bins", "all_mass", "all_plogp", "count")))

    def index_select(self, dim: int, idx: torch.Tensor) -> "SinkTerms":
        return SinkTerms(*(t.index_select(dim, idx) for t in (self.mass, self.bins, self.all_mass, self.all_plogp,
                                                                self.count)))


def _distance_bin(d: torch.Tensor) -> torch.Tensor:
    from sgl_kernel.capture_torch import distance_bin

    return distance_bin(d)


def _cpu_kernel(q: torch.Tensor, k_buffer: torch.Tensor) -> object | None:
    """The C++ extension when it applies to these tensors (float32 on CPU), else None."""
    if q.device.type != "cpu" or q.dtype != torch.float32 or k_buffer.dtype != torch.float32:
        return None
    from sgl_kernel import cpu_kernels, cpu_ops

    if not k_buffer.is_contiguous() or not cpu_ops.available():  # SGLANG_CPU_FUSED_OPS=0: the torch ops
        return None
    return cpu_kernels.EXT.get()


def sink_terms(q: torch.Tensor, k_buffer: torch.Tensor, req_to_token: torch.Tensor, row_req: torch.Tensor,
               row_pos: torch.Tensor, *, scale: float, head_lse: torch.Tensor, n_sink: torch.Tensor,
               head_ids: torch.Tensor | None = None, window: torch.Tensor | None = None,
               mask_prefix: torch.Tensor | None = None, logit_softcap: float = 0.0,
               max_sink: int | None = None) -> SinkTerms:
    """``sink_terms_ref``'s result, from the C++ kernel on CPU in float32."""
    ext = _cpu_kernel(q, k_buffer)
    if ext is None:
        return sink_terms_ref(q, k_buffer, req_to_token, row_req, row_pos, scale=scale, head_lse=head_lse,
                              n_sink=n_sink, head_ids=head_ids, window=window, mask_prefix=mask_prefix,
                              logit_softcap=logit_softcap, max_sink=max_sink)
    terms = ext.sink_terms(q, k_buffer, req_to_token, row_req, row_pos, float(scale), head_lse, n_sink, head_ids,
                           window, mask_prefix, float(logit_softcap), -1 if max_sink is None else int(max_sink))
    return SinkTerms(*terms)


def sink_terms_ref(q: torch.Tensor, k_buffer: torch.Tensor, req_to_token: torch.Tensor, row_req: torch.Tensor,
                   row_pos: torch.Tensor, *, scale: float, head_lse: torch.Tensor, n_sink: torch.Tensor,
                   head_ids: torch.Tensor | None = None, window: torch.Tensor | None = None,
                   mask_prefix: torch.Tensor | None = None, logit_softcap: float = 0.0,
                   max_sink: int | None = None) -> SinkTerms:
    """Sink terms of N query rows: the keys j < n_sink[row] that the row attends to (j <= t,
    inside the window: j > t - window when window > 0). q [N, Hq, D]; head_lse [N, H_sel]
    over the same window (heads ``head_ids``, all when None); n_sink, window, mask_prefix
    [N] int64. ``max_sink`` bounds n_sink without reading it on the host (CUDA graphs)."""
    n, dev = q.shape[0], q.device
    h_sel = head_lse.shape[1]
    s_max = max_sink if max_sink is not None else (int(n_sink.max()) if n else 0)
    s_max = min(s_max, req_to_token.shape[1])
    if s_max == 0 or n == 0:
        z = torch.zeros(n, h_sel, dtype=torch.float32, device=dev)
        return SinkTerms(z, torch.zeros(n, N_HIST_BINS, dtype=torch.float32, device=dev), z.clone(), z.clone(),
                         torch.zeros(n, dtype=torch.int64, device=dev))
    hq, hkv = q.shape[1], k_buffer.shape[1]
    heads = head_ids if head_ids is not None else torch.arange(hq, device=dev)
    kv = torch.div(heads, hq // hkv, rounding_mode="floor")
    pos = torch.arange(s_max, device=dev)
    slots = req_to_token[row_req][:, :s_max].long()  # [N, S]
    k = k_buffer[slots][:, :, kv].float()  # [N, S, H_sel, D]
    # an elementwise product and a sum over D, not a GEMM: each score is computed the same way
    # whatever the number of rows and sink keys (a CUDA graph bounds them differently from eager)
    s = softcap_((k * q[:, None, heads].float()).sum(-1).transpose(1, 2) * scale, logit_softcap)  # [N, H, S]
    lse = head_lse[:, :, None].float()
    t = row_pos[:, None]
    inside = (pos[None, :] < n_sink[:, None]) & (pos[None, :] <= t)
    if window is not None:
        inside &= (window[:, None] <= 0) | (pos[None, :] > t - window[:, None])
    # outside keys may hold any bits (unwritten slots): select, never multiply
    p = torch.where(inside[:, None, :], torch.exp(s - lse), torch.zeros_like(s))  # [N, H, S]
    plogp = torch.where(inside[:, None, :], p * (lse - s), torch.zeros_like(s))  # -p log p >= 0
    open_ = inside if mask_prefix is None else inside & (pos[None, :] >= mask_prefix[:, None])
    pu = torch.where(open_[:, None, :], p, torch.zeros_like(p))
    bins = torch.zeros(n, N_HIST_BINS, dtype=torch.float32, device=dev)
    bins.scatter_add_(1, _distance_bin((t - pos[None, :]).clamp(min=0)), pu.mean(1))
    return SinkTerms(pu.sum(-1), bins, p.sum(-1), plogp.sum(-1), inside.sum(-1))


def sink_mass(q: torch.Tensor, k_buffer: torch.Tensor, req_to_token: torch.Tensor, row_req: torch.Tensor,
              row_pos: torch.Tensor, *, scale: float, head_lse: torch.Tensor, n_sink: torch.Tensor,
              head_ids: torch.Tensor | None = None, window: torch.Tensor | None = None,
              mask_prefix: torch.Tensor | None = None, logit_softcap: float = 0.0) -> torch.Tensor:
    """[N] head-averaged attention probability on positions j < n_sink[row] that the row
    attends to and that are not private (j >= mask_prefix). Arguments as ``sink_terms``."""
    return sink_terms(q, k_buffer, req_to_token, row_req, row_pos, scale=scale, head_lse=head_lse, n_sink=n_sink,
                      head_ids=head_ids, window=window, mask_prefix=mask_prefix,
                      logit_softcap=logit_softcap).sink_mass
