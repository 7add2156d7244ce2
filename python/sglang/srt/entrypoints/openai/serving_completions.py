"""POST /v1/completions: raw prompts (text, token ids, or a batch of either)."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from sglang.srt.entrypoints.capture_api import CapturePlacer
from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import OPENAI_PARAM_NAMES, CompletionRequest, sampling_dict
from sglang.srt.entrypoints.openai.request_prep import json_response, parse_body, prepare_capture, validate_sampling
from sglang.srt.entrypoints.openai.serving_common import (
    SSE_DONE,
    ServingContext,
    SSEResponse,
    generate_all,
    finish_reason_of,
    merge_streams,
    new_id,
    sample_rid,
    samples_usage,
    share_slot,
    sse,
)
from sglang.srt.limits import MAX_PROMPTS_PER_REQUEST, MAX_TOP_LOGPROBS
from sglang.srt.managers.io_struct import GenerateReqInput
from sglang.srt.parser.reasoning_parser import TokenPhaseTracker



class CompletionLogprobs:
    """Accumulates OpenAI's legacy logprobs block (tokens, token_logprobs, top_logprobs,
    text_offset). With echo, the prompt's tokens come first (the first scored None, as
    OpenAI and upstream SGLang send it), their offsets counted from the prompt's start."""

    def __init__(self, ctx: ServingContext, offset: int, echo: bool = False) -> None:
        self.ctx = ctx
        self.offset = offset
        self.echo = echo

    def block(self, meta: dict[str, Any], with_top: bool) -> dict[str, Any]:
        b: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        if self.echo and meta.get("input_token_logprobs"):
            prompt_offset = 0
            prompt = meta["input_token_logprobs"]
            tops = meta.get("input_top_logprobs") or [None] * len(prompt)
            for entry, alts in zip(prompt, tops):
                prompt_offset += self._add(b, entry, alts, with_top, prompt_offset)
        tops = meta.get("output_top_logprobs") or []
        for i, entry in enumerate(meta.get("output_token_logprobs") or []):
            self.offset += self._add(b, entry, tops[i] if i < len(tops) else [], with_top, self.offset)
        return b

    def _add(self, b: dict[str, Any], entry: list[Any], alts: list[Any] | None, with_top: bool, offset: int) -> int:
        """One token's entry; returns its text length."""
        tok = self.ctx.tm.tokenizer
        lp, tid, text = entry
        t = text if isinstance(text, str) else tok.decode([tid])
        b["tokens"].append(t)
        b["token_logprobs"].append(None if lp is None else float(lp))
        b["text_offset"].append(offset)
        if with_top and alts is not None:
            b["top_logprobs"].append({(a[2] if isinstance(a[2], str) else tok.decode([a[1]])): float(a[0])
                                      for a in alts})
        else:
            b["top_logprobs"].append(None)
        return len(t)


class CompletionServing:
    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx

    def _prompts(self, req: CompletionRequest) -> list[tuple[str | None, list[int] | None]]:
        p = req.prompt
        if isinstance(p, str):
            items: list[Any] = [p]
        elif p and all(isinstance(x, int) for x in p):
            items = [p]
        else:
            items = list(p)
        if not items:
            raise APIError(400, "prompt: must not be empty", "prompt")
        if len(items) > MAX_PROMPTS_PER_REQUEST:
            raise APIError(400, f"prompt: at most {MAX_PROMPTS_PER_REQUEST} prompts per request", "prompt")
        out: list[tuple[str | None, list[int] | None]] = []
        for x in items:
            if isinstance(x, str):
                if x == "":
                    raise APIError(400, "prompt: must not be an empty string", "prompt")
                out.append((x, None))
            else:
                if not x:
                    raise APIError(400, "prompt: a token id list must not be empty", "prompt")
                vocab = int(self.ctx.model_info.get("vocab_size") or 0)
                if any(t < 0 or (vocab and t >= vocab) for t in x):
                    raise APIError(400, f"prompt: token ids must be in [0, {vocab})", "prompt")
                out.append((None, list(x)))
        return out

    async def handle(self, request: Request) -> Response:
        ctx = self.ctx
        req = parse_body(CompletionRequest, await request.body())
        ctx.check_model(req.model)
        if req.best_of not in (None, 1):
            raise APIError(400, "best_of: only 1 is supported", "best_of")
        if req.suffix:
            raise APIError(400, "suffix: not supported by this server", "suffix")
        if req.logprobs is not None and not 0 <= req.logprobs <= MAX_TOP_LOGPROBS:
            raise APIError(400, f"logprobs: must be between 0 and {MAX_TOP_LOGPROBS}", "logprobs")
        prompts = self._prompts(req)
        sampling = sampling_dict(req, req.max_tokens)
        params = validate_sampling(sampling, OPENAI_PARAM_NAMES)
        samples = params.samples()  # n > 1: n choices per prompt (prompt-major), sharing its KV
        n = len(samples)
        echo_texts = [self._echo_text(t, ids) if req.echo else "" for t, ids in prompts for _ in samples]
        rid = req.rid or new_id("")
        capture, slot = prepare_capture(ctx, req, request)  # nothing raises between here and the try below
        if capture is not None and len(prompts) > 1:
            slot.release()  # type: ignore[union-attr]
            raise APIError(400, "return_attention_tokens: capture works on one prompt per request", "prompt")
        slots = share_slot(slot, n)
        many = len(prompts) > 1
        objs = [GenerateReqInput(text=t, input_ids=ids, sampling_params=dataclasses.replace(sp), stream=req.stream,
                                 rid=sample_rid(rid, i if many else None, j, n),
                                 return_logprob=req.logprobs is not None, top_logprobs_num=req.logprobs or 0,
                                 logprob_start_len=0 if req.echo else -1,
                                 custom_logit_processor=req.custom_logit_processor,
                                 capture=capture, capture_slot=slots[j],
                                 param_names={**OPENAI_PARAM_NAMES, "text": "prompt", "input_ids": "prompt"},
                                 group=sample_rid(rid, i if many else None, 0, 1) if n > 1 else None)
                for i, (t, ids) in enumerate(prompts) for j, sp in enumerate(samples)]
        out = await generate_all(ctx, request, objs, slot, (lambda firsts, gens: self._stream(
            req, rid, firsts, gens, echo_texts, capture is not None)) if req.stream else None)
        if isinstance(out, SSEResponse):
            return out
        return json_response(self._complete(req, rid, out, echo_texts, capture is not None))

    def _echo_text(self, text: str | None, ids: list[int] | None) -> str:
        return text if text is not None else self.ctx.tm.tokenizer.decode(ids or [])

    def _placer(self, capturing: bool) -> tuple[CapturePlacer | None, TokenPhaseTracker | None]:
        if not capturing:
            return None, None
        tracker = TokenPhaseTracker(self.ctx.reasoning_parser) if self.ctx.reasoning_parser else None
        return CapturePlacer(tagging=tracker is not None), tracker

    def _complete(self, req: CompletionRequest, rid: str, results: list[dict[str, Any]],
                  echo_texts: list[str], capturing: bool) -> dict[str, Any]:
        choices = []
        for i, final in enumerate(results):
            meta = final.get("meta_info", {})
            choice: dict[str, Any] = {"index": i, "text": echo_texts[i] + final.get("text", ""), "logprobs": None}
            if req.logprobs is not None:
                choice["logprobs"] = CompletionLogprobs(self.ctx, len(echo_texts[i]), req.echo).block(
                    meta, req.logprobs > 0)
            placer, tracker = self._placer(capturing)
            if placer is not None:
                phases = tracker.feed(final.get("token_texts") or []) if tracker else None
                choice.update(placer.chunk(final, phases, final=True))
            reason, matched = finish_reason_of(meta)
            choice["finish_reason"] = reason
            choice["matched_stop"] = matched
            choices.append(choice)
        return {"id": f"cmpl-{rid}", "object": "text_completion", "created": int(time.time()),
                "model": self.ctx.model_name, "choices": choices,
                "usage": samples_usage([r.get("meta_info", {}) for r in results], req.n)}

    async def _stream(self, req: CompletionRequest, rid: str, firsts: list[dict[str, Any]],
                      gens: list[AsyncIterator[dict[str, Any]]], echo_texts: list[str],
                      capturing: bool) -> AsyncIterator[bytes]:
        base = {"id": f"cmpl-{rid}", "object": "text_completion", "created": int(time.time()),
                "model": self.ctx.model_name}
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        n = len(gens)
        lps = [CompletionLogprobs(self.ctx, len(e), req.echo) for e in echo_texts]
        placers = [self._placer(capturing) for _ in range(n)]
        metas: list[dict[str, Any]] = [{} for _ in range(n)]
        echoed = [False] * n

        def chunk(i: int, out: dict[str, Any]) -> bytes | None:
            meta = out.get("meta_info", {})
            metas[i] = meta
            text = out.get("delta", "")
            if not echoed[i]:
                text = echo_texts[i] + text
                echoed[i] = True
            reason, matched = finish_reason_of(meta)
            choice: dict[str, Any] = {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
            if reason is not None:
                choice["matched_stop"] = matched
            if req.logprobs is not None and (meta.get("output_token_logprobs") or meta.get("input_token_logprobs")):
                choice["logprobs"] = lps[i].block(meta, req.logprobs > 0)
            placer, tracker = placers[i]
            if placer is not None:
                choice.update(placer.chunk(out, tracker.feed(out.get("token_texts") or []) if tracker else None,
                                          final=reason is not None))
            if not text and reason is None and placer is None and choice["logprobs"] is None:
                return None
            return sse({**base, "choices": [choice]})

        for i, f in enumerate(firsts):
            c = chunk(i, f)
            if c:
                yield c
        async for i, out in merge_streams(gens):
            c = chunk(i, out)
            if c:
                yield c
        if include_usage:
            yield sse({**base, "choices": [], "usage": samples_usage(metas, req.n)})
        yield SSE_DONE
