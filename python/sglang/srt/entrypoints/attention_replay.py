"""POST /v1/attention/replay: the exact full attention of a finished trace (dense replay).

For up to MAX_REPLAY_TOKENS token ids the scheduler runs one prefill of its own and
returns softmax(q k^T) of the asked layers and heads (or their mean), computed by this
engine's forward and ``sgl_kernel.dense_attention`` (never transformers), as float16:
base64 of the raw little-endian array in a JSON body, or a ``.npy`` file. It is capture:
the capture flag, the attention key and the concurrency limit apply; positions below
``attention_mask_prefix`` are zero in every row and column.
"""
from __future__ import annotations

import base64
import io
import uuid
from typing import Literal, Union

from pydantic import StrictBool, StrictInt, StrictStr
from starlette.requests import Request
from starlette.responses import Response

from sglang.srt.entrypoints.capture_api import capture_allowed, resolve_layers
from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import _Strict
from sglang.srt.entrypoints.openai.request_prep import json_response, parse_body
from sglang.srt.entrypoints.openai.serving_common import ServingContext
from sglang.srt.limits import MAX_REPLAY_ELEMENTS, MAX_REPLAY_TOKENS
from sglang.srt.managers.io_struct import ReplayReq


class AttentionReplayRequest(_Strict):
    model: StrictStr = "default"
    input_ids: list[StrictInt] | None = None
    text: StrictStr | None = None
    layers: Union[StrictStr, list[StrictInt]] = "last"
    # "each": every head; "mean": their mean; a list: those heads (``average``: their mean)
    heads: Union[Literal["each", "mean"], list[StrictInt]] = "each"
    average: StrictBool = False
    attention_mask_prefix: StrictInt = 0
    format: Literal["base64", "npy"] = "base64"


async def replay(ctx: ServingContext, request: Request) -> Response:
    req = parse_body(AttentionReplayRequest, await request.body())
    ctx.check_model(req.model)
    args = ctx.server_args
    if not capture_allowed(args):
        raise APIError(400, "input_ids: attention replay is capture, and capture is disabled on this server (start "
                       "it with --return-attention-tokens)", "input_ids")
    if ctx.guard.api_key:
        ctx.guard.check_key(request.headers)
    if (req.input_ids is None) == (req.text is None):
        raise APIError(400, "input_ids: give exactly one of input_ids or text", "input_ids")
    ids = list(req.input_ids) if req.input_ids is not None else list(ctx.tm.tokenizer.encode(req.text))
    vocab = int(ctx.model_info.get("vocab_size") or 0)
    field = "input_ids" if req.input_ids is not None else "text"
    if not 0 < len(ids) <= MAX_REPLAY_TOKENS:
        raise APIError(400, f"{field}: 1 to {MAX_REPLAY_TOKENS} tokens (got {len(ids)})", field)
    if any(t < 0 or (vocab and t >= vocab) for t in ids):
        raise APIError(400, f"input_ids: token ids must be in [0, {vocab})", "input_ids")
    num_layers, num_heads = int(ctx.model_info["num_layers"]), int(ctx.model_info["num_attention_heads"])
    layers = resolve_layers(req.layers, num_layers, "layers")
    if isinstance(req.heads, list):
        if not req.heads or any(not 0 <= h < num_heads for h in req.heads):
            raise APIError(400, f"heads: \"each\", \"mean\" or head ids in 0..{num_heads - 1}", "heads")
        head_ids: list[int] | None = sorted(set(req.heads))
        mean = req.average
    else:
        head_ids, mean = None, req.heads == "mean"
    n_heads = 1 if mean else (len(head_ids) if head_ids is not None else num_heads)
    elements = len(layers) * n_heads * len(ids) ** 2
    if elements > MAX_REPLAY_ELEMENTS:
        raise APIError(400, f"layers: {len(layers)} layers x {n_heads} heads x {len(ids)}^2 positions is "
                       f"{elements} values, more than {MAX_REPLAY_ELEMENTS}; ask for fewer layers or heads, or "
                       "the head mean", "layers")
    if req.attention_mask_prefix < 0:
        raise APIError(400, "attention_mask_prefix: must be >= 0", "attention_mask_prefix")
    slot = ctx.guard.acquire()
    try:
        out = await ctx.tm.replay(ReplayReq(uuid.uuid4().hex, ids, layers, head_ids, mean,
                                            min(req.attention_mask_prefix, len(ids))))
    finally:
        slot.release()
    if out.error is not None:
        raise APIError(out.error_status, out.error, "input_ids" if out.error_status == 400 else None)
    probs = out.probs
    if req.format == "npy":
        buf = io.BytesIO()
        import numpy as np

        np.save(buf, probs)
        return Response(buf.getvalue(), media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="attention.npy"'})
    return json_response({
        "object": "attention.replay", "model": ctx.model_name, "token_ids": ids, "layers": layers,
        "heads": "mean" if mean and head_ids is None else head_ids if head_ids is not None else list(range(num_heads)),
        "mean": mean, "dtype": "float16", "shape": list(probs.shape), "byte_order": "little",
        "data": base64.b64encode(probs.astype("<f2").tobytes()).decode("ascii"),
    })
