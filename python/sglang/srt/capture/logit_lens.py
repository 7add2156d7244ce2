"""Logit lens: what the residual stream after a layer would predict.

For a captured decode step (the forward that produced output token i) and a requested
layer l, the hidden state of the step's query row after layer l (the residual stream:
the layer's output plus its residual) goes through the model's final norm and
unembedding, exactly as the last layer's does to make the real logits; the entry holds the
top-k next tokens with their probabilities and the probability and rank (0 = the top) of
the token actually produced. On the last layer this is the model's own distribution
before sampling controls.

The model keeps the rows during the forward (``LensBatch.keep``, called by
``DecoderModel`` through ``ForwardBatch.lens``); the readout runs after sampling, when the
produced tokens are known, on the (layer, row) pairs of every kept layer together, in
chunks of at most ``_CHUNK_ROWS``: one unembedding GEMM then reads the LM head (the largest
weight) once for several layers instead of once per layer, and the [chunk, vocab] matrix
stays bounded whatever the batch. Each row's numbers do not depend on the chunk it is in
(the norm is per row; on CPU the packed GEMM's sums do not depend on the batch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from sglang.srt.managers.req import Req

# (layer, row) pairs per unembedding: 64 x a 49k vocab is a 12.6 MB float32 matrix
_CHUNK_ROWS = 64


@dataclass
class LensRow:
    req: "Req"
    token_index: int  # row of the forward's hidden states
    decode_step: int


class LensBatch:
    """The lens rows of one forward; implements ``forward_batch_info.LensSink``."""

    def __init__(self, rows: list[LensRow], device: torch.device) -> None:
        self.rows = rows
        self.layers = frozenset(l for r in rows for l in _params(r.req).logit_lens_layers)
        self.index = torch.tensor([r.token_index for r in rows], dtype=torch.long, device=device)
        self.hidden: dict[int, torch.Tensor] = {}

    def keep(self, layer_id: int, hidden: torch.Tensor, residual: torch.Tensor | None) -> None:
        x = hidden if residual is None else hidden + residual
        self.hidden[layer_id] = x.index_select(0, self.index)

    def readout(self, model: Any, produced: dict[int, int]) -> None:
        """Append each row's entries to its request's capture state; ``produced`` maps
        id(request) to the token it sampled this step."""
        toks = torch.tensor([produced[id(r.req)] for r in self.rows], dtype=torch.long, device=self.index.device)
        k = max(_params(r.req).logit_lens_top_k for r in self.rows)
        pairs: list[tuple[int, int]] = []  # (layer, row), layer by layer as the entries are listed
        xs, ts = [], []
        for layer in sorted(self.hidden):
            want = [j for j, r in enumerate(self.rows) if layer in _params(r.req).logit_lens_layers]
            every = len(want) == len(self.rows)
            xs.append(self.hidden[layer] if every else self.hidden[layer][want])
            ts.append(toks if every else toks[want])
            pairs += [(layer, j) for j in want]
        if not pairs:
            self.hidden.clear()
            return
        x_all, t_all = torch.cat(xs), torch.cat(ts)
        for c in range(0, len(pairs), _CHUNK_ROWS):
            lp = torch.log_softmax(model.lens_logits(x_all[c:c + _CHUNK_ROWS]), dim=-1)  # [n, V] float32
            tok_lp = lp.gather(1, t_all[c:c + _CHUNK_ROWS, None])  # [n, 1]
            rank = (lp > tok_lp).sum(1)
            top_v, top_i = torch.topk(lp, min(k, lp.shape[1]), dim=-1)
            kk = top_v.shape[1]
            host = torch.cat([top_v.exp(), top_i.to(top_v.dtype), tok_lp.exp(), rank[:, None].to(top_v.dtype)],
                             1).cpu()
            for (layer, j), row in zip(pairs[c:c + _CHUNK_ROWS], host.tolist()):
                r = self.rows[j]
                n = _params(r.req).logit_lens_top_k
                r.req.capture_state.lens.append({
                    "decode_step": r.decode_step, "layer_id": layer,
                    "top_token_ids": [int(i) for i in row[kk: kk + n]], "top_probs": row[:n],
                    "token_id": produced[id(r.req)],
                    "token_prob": row[2 * kk], "token_rank": int(row[2 * kk + 1]),
                })
        self.hidden.clear()


def _params(req: "Req") -> Any:
    p = req.capture
    assert p is not None  # lens rows are made only for capturing requests
    return p
