"""POST /tokenize and /detokenize (also under /v1): the served model's tokenizer, with
upstream SGLang's request and response shapes."""
from __future__ import annotations

import asyncio
from typing import Any, cast

from starlette.requests import Request

from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import DetokenizeRequest, TokenizeRequest
from sglang.srt.entrypoints.openai.request_prep import json_response, parse_body
from sglang.srt.entrypoints.openai.serving_common import ServingContext
from sglang.srt.limits import MAX_PROMPTS_PER_REQUEST, OFF_LOOP_CHARS


async def tokenize(ctx: ServingContext, request: Request) -> Any:
    """{"tokens": ids (or a list per prompt), "count": n (or a list), "max_model_len"}."""
    req = parse_body(TokenizeRequest, await request.body())
    ctx.check_model(req.model)
    texts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if len(texts) > MAX_PROMPTS_PER_REQUEST:
        raise APIError(400, f"prompt: at most {MAX_PROMPTS_PER_REQUEST} prompts per request", "prompt")
    tok = ctx.tm.tokenizer

    def run() -> list[list[int]]:
        return [list(tok.encode(t, add_special_tokens=req.add_special_tokens)) for t in texts]

    # a long text is tokenized off the event loop, as for generation
    ids = await asyncio.to_thread(run) if sum(map(len, texts)) > OFF_LOOP_CHARS else run()
    single = isinstance(req.prompt, str)
    return json_response({"tokens": ids[0] if single else ids, "count": len(ids[0]) if single else [len(x) for x in ids],
                          "max_model_len": ctx.context_length or None})


async def detokenize(ctx: ServingContext, request: Request) -> Any:
    """{"text": text (or a list per id list)}; ids outside the vocabulary are a 400."""
    req = parse_body(DetokenizeRequest, await request.body())
    ctx.check_model(req.model)
    batch = bool(req.tokens) and isinstance(req.tokens[0], list)
    lists = cast("list[list[int]]", req.tokens if batch else [req.tokens])
    if len(lists) > MAX_PROMPTS_PER_REQUEST:
        raise APIError(400, f"tokens: at most {MAX_PROMPTS_PER_REQUEST} id lists per request", "tokens")
    vocab = int(ctx.model_info.get("vocab_size") or 0)
    if any(t < 0 or (vocab and t >= vocab) for ids in lists for t in ids):
        raise APIError(400, f"tokens: token ids must be in [0, {vocab})", "tokens")
    texts = [ctx.tm.tokenizer.decode(ids, skip_special_tokens=req.skip_special_tokens) for ids in lists]
    return json_response({"text": texts if batch else texts[0]})
