"""POST /v1/score: upstream SGLang's decoder-only scoring.

For each item, the prompt is query + item (item + query with ``item_first``) and the
score of label j is the probability that token ``label_token_ids[j]`` comes next (the
model's raw next-token distribution, no sampling controls), or, with ``apply_softmax``,
those probabilities renormalized over the labels. One engine request per item, one new
token each (its logprobs are what is read); a shared query is prefilled once and found
in the radix cache by the others.
"""
from __future__ import annotations

import math
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import ScoringRequest
from sglang.srt.entrypoints.openai.request_prep import json_response, parse_body
from sglang.srt.entrypoints.openai.serving_common import ServingContext, generate_all, new_id, sample_rid
from sglang.srt.limits import MAX_LOGIT_BIAS, MAX_PROMPTS_PER_REQUEST
from sglang.srt.managers.io_struct import GenerateReqInput
from sglang.srt.sampling.sampling_params import SamplingParams


def _prompts(ctx: ServingContext, req: ScoringRequest) -> list[list[int]]:
    tok = ctx.tm.tokenizer
    text = isinstance(req.items[0], str)  # pydantic made every item the same type
    if req.query is not None and isinstance(req.query, str) != text:
        raise APIError(400, "items: query and items must both be text or both be token ids", "items")
    if text:
        query = tok.encode(req.query) if req.query else []
        items = [list(tok.encode(it, add_special_tokens=False)) for it in req.items]  # type: ignore[arg-type]
    else:
        query = list(req.query or [])  # type: ignore[arg-type]
        items = [list(it) for it in req.items]  # type: ignore[arg-type]
    prompts = [it + query if req.item_first else query + it for it in items]
    vocab = int(ctx.model_info.get("vocab_size") or 0)
    for p in prompts:
        if not p:
            raise APIError(400, "items: a query + item prompt is empty", "items")
        if any(t < 0 or (vocab and t >= vocab) for t in p):
            raise APIError(400, f"items: token ids must be in [0, {vocab})", "items")
    return prompts


async def score(ctx: ServingContext, request: Request) -> Response:
    req = parse_body(ScoringRequest, await request.body())
    ctx.check_model(req.model)
    if not req.items:
        raise APIError(400, "items: give at least one item", "items")
    if len(req.items) > MAX_PROMPTS_PER_REQUEST:
        raise APIError(400, f"items: at most {MAX_PROMPTS_PER_REQUEST} items per request", "items")
    labels = req.label_token_ids
    vocab = int(ctx.model_info.get("vocab_size") or 0)
    if not labels or len(labels) > MAX_LOGIT_BIAS:
        raise APIError(400, f"label_token_ids: give 1 to {MAX_LOGIT_BIAS} token ids", "label_token_ids")
    if any(t < 0 or (vocab and t >= vocab) for t in labels):
        raise APIError(400, f"label_token_ids: token ids must be in [0, {vocab})", "label_token_ids")
    prompts = _prompts(ctx, req)
    rid = new_id("")
    objs = [GenerateReqInput(input_ids=p, sampling_params=SamplingParams(max_new_tokens=1, temperature=0.0),
                             rid=sample_rid(rid, i, 0, 1), return_logprob=True, token_ids_logprob=list(labels),
                             param_names={"input_ids": "items"})
            for i, p in enumerate(prompts)]
    finals = await generate_all(ctx, request, objs, None, None)
    assert isinstance(finals, list)
    scores = []
    for final in finals:
        rows = final.get("meta_info", {}).get("output_token_ids_logprobs") or []
        if not rows:
            raise APIError(500, "the engine returned no label logprobs")
        lps = [float(lp) for lp, _, _ in rows[0]]
        if req.apply_softmax:
            top = max(lps)
            exps = [math.exp(x - top) for x in lps]
            total = sum(exps)
            scores.append([e / total for e in exps])
        else:
            scores.append([math.exp(x) for x in lps])
    prompt_tokens = sum(f.get("meta_info", {}).get("prompt_tokens", 0) for f in finals)
    return json_response({"object": "scoring", "model": ctx.model_name, "created": int(time.time()),
                          "scores": scores, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 0,
                                                      "total_tokens": prompt_tokens}})
