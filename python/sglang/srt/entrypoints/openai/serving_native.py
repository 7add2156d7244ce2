"""POST /generate: SGLang's native endpoint (text or input_ids, sampling_params, stream)."""
from __future__ import annotations

import dataclasses
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from sglang.srt.entrypoints.capture_api import CapturePlacer
from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import GenerateRequest
from sglang.srt.entrypoints.openai.request_prep import json_response, parse_body, prepare_capture, validate_sampling
from sglang.srt.entrypoints.openai.serving_common import (
    SSE_DONE,
    ServingContext,
    SSEResponse,
    generate_all,
    merge_streams,
    new_id,
    sample_rid,
    share_slot,
    sse,
)
from sglang.srt.limits import MAX_PROMPTS_PER_REQUEST, MAX_TOP_LOGPROBS
from sglang.srt.managers.io_struct import GenerateReqInput
from sglang.srt.parser.reasoning_parser import TokenPhaseTracker



def _logprob_texts(meta: dict[str, Any], keep: bool) -> dict[str, Any]:
    """``return_text_in_logprobs: false``: each [logprob, token_id, text] carries None as
    its text, as upstream SGLang sends it."""
    if keep:
        return meta
    for key in ("output_token_logprobs", "input_token_logprobs"):
        if key in meta:
            meta[key] = [[lp, t, None] for lp, t, _ in meta[key]]
    for key in ("output_top_logprobs", "input_top_logprobs", "output_token_ids_logprobs"):
        if key in meta:
            meta[key] = [None if row is None else [[lp, t, None] for lp, t, _ in row] for row in meta[key]]
    return meta


class GenerateServing:
    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx

    def _inputs(self, req: GenerateRequest) -> tuple[list[tuple[str | None, list[int] | None]], bool]:
        if (req.text is None) == (req.input_ids is None):
            raise APIError(400, "text: give exactly one of text or input_ids", "text")
        if req.text is not None:
            batch = isinstance(req.text, list)
            texts = req.text if batch else [req.text]
            if not texts or any(t == "" for t in texts):
                raise APIError(400, "text: must not be empty", "text")
            items: list[tuple[str | None, list[int] | None]] = [(t, None) for t in texts]
        else:
            ids = req.input_ids or []
            batch = bool(ids) and isinstance(ids[0], list)
            lists = ids if batch else [ids]
            if not lists or any(not x for x in lists):
                raise APIError(400, "input_ids: must not be empty", "input_ids")
            if any(t < 0 for x in lists for t in x):
                raise APIError(400, "input_ids: token ids must be non-negative", "input_ids")
            items = [(None, list(x)) for x in lists]
        if len(items) > MAX_PROMPTS_PER_REQUEST:
            raise APIError(400, f"text: at most {MAX_PROMPTS_PER_REQUEST} prompts per request", "text")
        return items, batch

    async def handle(self, request: Request) -> Response:
        ctx = self.ctx
        req = parse_body(GenerateRequest, await request.body())
        items, batch = self._inputs(req)
        params = validate_sampling(dict(req.sampling_params or {}))
        if not 0 <= req.top_logprobs_num <= MAX_TOP_LOGPROBS:
            raise APIError(400, f"top_logprobs_num: must be between 0 and {MAX_TOP_LOGPROBS}", "top_logprobs_num")
        rid = req.rid or new_id("")
        capture, slot = prepare_capture(ctx, req, request)
        if capture is not None and batch:
            slot.release()  # type: ignore[union-attr]
            raise APIError(400, "return_attention_tokens: capture works on one prompt per request", "text")
        # n > 1: n engine requests per prompt (prompt-major), sharing the prompt's KV
        samples = params.samples()
        n = len(samples)
        slots = share_slot(slot, n)
        objs = [GenerateReqInput(text=t, input_ids=ids, sampling_params=dataclasses.replace(sp), stream=req.stream,
                                 rid=sample_rid(rid, i if batch else None, j, n), return_logprob=req.return_logprob,
                                 top_logprobs_num=req.top_logprobs_num, logprob_start_len=req.logprob_start_len,
                                 token_ids_logprob=req.token_ids_logprob,
                                 custom_logit_processor=req.custom_logit_processor,
                                 capture=capture, capture_slot=slots[j],
                                 group=sample_rid(rid, i if batch else None, 0, 1) if n > 1 else None)
                for i, (t, ids) in enumerate(items) for j, sp in enumerate(samples)]
        batch = batch or n > 1  # a list of results, one per prompt and sample
        out = await generate_all(ctx, request, objs, slot, (lambda firsts, gens: self._stream(
            firsts, gens, batch, capture is not None, req.return_text_in_logprobs)) if req.stream else None)
        if isinstance(out, SSEResponse):
            return out
        bodies = [self._final(final, capture is not None, req.return_text_in_logprobs) for final in out]
        return json_response(bodies if batch else bodies[0])

    def _placer(self, capturing: bool) -> tuple[CapturePlacer | None, TokenPhaseTracker | None]:
        if not capturing:
            return None, None
        tracker = TokenPhaseTracker(self.ctx.reasoning_parser) if self.ctx.reasoning_parser else None
        return CapturePlacer(tagging=tracker is not None), tracker

    def _final(self, final: dict[str, Any], capturing: bool, text_in_logprobs: bool) -> dict[str, Any]:
        meta = _logprob_texts(dict(final.get("meta_info", {})), text_in_logprobs)
        placer, tracker = self._placer(capturing)
        if placer is not None:  # entries tagged with their phase, and the output token labels
            f = placer.chunk(final, tracker.feed(final.get("token_texts") or []) if tracker else None)
            meta["attention_tokens"] = f["attention_tokens"]
            meta["attention_output_tokens"] = f["attention_output_tokens"]
        return {"text": final.get("text", ""), "output_ids": list(final.get("output_ids") or []), "meta_info": meta}

    async def _stream(self, firsts: list[dict[str, Any]], gens: list[AsyncIterator[dict[str, Any]]], batch: bool,
                      capturing: bool, text_in_logprobs: bool) -> AsyncIterator[bytes]:
        placers = [self._placer(capturing) for _ in gens]
        # Logprobs accumulate over the stream like text and output_ids (upstream's shape);
        # capture entries stay per event (each event carries its own tokens' entries).
        so_far: list[dict[str, list[Any]]] = [{} for _ in gens]

        def chunk(i: int, out: dict[str, Any]) -> bytes:
            meta = _logprob_texts(dict(out.get("meta_info", {})), text_in_logprobs)
            for key in ("output_token_logprobs", "output_top_logprobs", "output_token_ids_logprobs"):
                if key in meta:
                    acc = so_far[i].setdefault(key, [])
                    acc += meta[key]
                    meta[key] = list(acc)
            placer, tracker = placers[i]
            if placer is not None:
                f = placer.chunk(out, tracker.feed(out.get("token_texts") or []) if tracker else None)
                meta["attention_tokens"] = f["attention_tokens"]
                meta["attention_output_tokens"] = f["attention_output_tokens"]
            body: dict[str, Any] = {"text": out.get("text", ""), "output_ids": list(out.get("output_ids") or []),
                                    "meta_info": meta}
            if batch:
                body["index"] = i
            return sse(body)

        for i, f in enumerate(firsts):
            yield chunk(i, f)
        async for i, out in merge_streams(gens):
            yield chunk(i, out)
        yield SSE_DONE
