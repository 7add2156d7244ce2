"""POST /v1/chat/completions: chat template, reasoning split, capture placement, SSE."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from sglang.srt.entrypoints.capture_api import CapturePlacer, mask_system_prompt, wants_capture
from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import OPENAI_PARAM_NAMES, ChatCompletionRequest, sampling_dict
from sglang.srt.entrypoints.openai.request_prep import (
    json_response,
    parse_body,
    prepare_capture,
    validate_sampling,
)
from sglang.srt.entrypoints.openai.tool_calls import (
    ToolCallStream,
    ToolPlan,
    message_tool_calls,
    plan_tools,
    template_call,
)
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
    usage_of,
)
from sglang.srt.limits import MAX_TOP_LOGPROBS, OFF_LOOP_CHARS
from sglang.srt.managers.io_struct import GenerateReqInput
from sglang.srt.parser.reasoning_parser import ReasoningParser, TokenPhaseTracker, get_format, thinking_enabled



def _token_text(ctx: ServingContext, tid: int, text: Any) -> str:
    if isinstance(text, str):
        return text
    return ctx.tm.tokenizer.decode([tid])


def chat_logprobs(ctx: ServingContext, meta: dict[str, Any]) -> dict[str, Any] | None:
    toks = meta.get("output_token_logprobs")
    if toks is None:
        return None
    tops = meta.get("output_top_logprobs") or []
    content = []
    for i, (lp, tid, text) in enumerate(toks):
        t = _token_text(ctx, tid, text)
        alts = []
        for alp, aid, atext in (tops[i] if i < len(tops) and tops[i] else []):
            at = _token_text(ctx, aid, atext)
            alts.append({"token": at, "logprob": float(alp), "bytes": list(at.encode("utf-8"))})
        content.append({"token": t, "logprob": float(lp), "bytes": list(t.encode("utf-8")), "top_logprobs": alts})
    return {"content": content}


class ChatTemplate:
    """Renders messages with the model's template or the --chat-template file."""

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx
        self.template: str | None = None
        path = ctx.server_args.chat_template
        if path:
            with open(path, encoding="utf-8") as f:
                self.template = f.read()

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool, continue_final: bool,
               kwargs: dict[str, Any]) -> str:
        tok = self.ctx.tm.tokenizer
        try:
            return tok.apply_chat_template(
                messages, chat_template=self.template, tokenize=False,
                add_generation_prompt=add_generation_prompt, continue_final_message=continue_final, **kwargs)
        except APIError:
            raise
        except Exception as e:  # jinja errors such as "roles must alternate"
            raise APIError(400, f"messages: the chat template rejected the conversation: {e}", "messages") from None

    def encode(self, text: str) -> list[int]:
        # The rendered template already holds BOS and other special tokens as text.
        return list(self.ctx.tm.tokenizer.encode(text, add_special_tokens=False))

    def system_prompt_len(self, messages: list[dict[str, Any]], full: str, full_ids: list[int],
                          kwargs: dict[str, Any]) -> int:
        """Tokens to mask for --attention-mask-system-prompt: everything up to the end of the
        last system (or developer) message, wherever it sits in the conversation; 0 without
        one. Masking is a prefix, so user turns before a mid-conversation system message are
        masked too. When the template does not render that part as a prefix of the prompt,
        the whole prompt is masked: privacy wins over coverage."""
        last = max((i for i, m in enumerate(messages) if m["role"] == "system"), default=-1)
        if last < 0:
            return 0
        try:
            prefix = self.render(messages[: last + 1], False, False, kwargs)
        except APIError:
            return len(full_ids)
        ids = self.encode(prefix)
        if not full.startswith(prefix) or full_ids[: len(ids)] != ids:
            return len(full_ids)
        return len(ids)

class ChatServing:
    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx
        self.template = ChatTemplate(ctx)

    async def handle(self, request: Request) -> Response:
        ctx = self.ctx
        req = parse_body(ChatCompletionRequest, await request.body())
        ctx.check_model(req.model)
        self._check_unsupported(req)

        messages = []
        for i, m in enumerate(req.messages):
            d: dict[str, Any] = {"role": m.role, "content": m.text()}
            if m.name is not None:
                d["name"] = m.name
            if m.tool_call_id is not None:
                d["tool_call_id"] = m.tool_call_id
            if m.tool_calls:
                d["tool_calls"] = [template_call(c) for c in m.tool_calls]
            if m.role == "developer":
                d["role"] = "system"  # templates know "system"; OpenAI's newer name for it
            messages.append(d)
        continue_final = req.continue_final_message
        if continue_final and messages[-1]["role"] != "assistant":
            raise APIError(400, "continue_final_message: the last message must be from the assistant",
                           "continue_final_message")
        kwargs = dict(req.chat_template_kwargs or {})
        tools = plan_tools(req, ctx.server_args.tool_call_parser)
        template_kwargs = {**kwargs, "tools": tools.template_tools()} if tools else kwargs

        def render() -> tuple[str, list[int]]:
            text = self.template.render(messages, not continue_final, continue_final, template_kwargs)
            return text, self.template.encode(text)

        # A long conversation is rendered and tokenized on a worker thread, so it does not
        # stall every other stream on the event loop.
        long_prompt = sum(len(m["content"]) for m in messages) > OFF_LOOP_CHARS
        prompt, input_ids = await asyncio.to_thread(render) if long_prompt else render()
        if not input_ids:
            raise APIError(400, "messages: the conversation renders to an empty prompt", "messages")

        max_name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if max_tokens is None and ctx.context_length:
            max_tokens = max(ctx.context_length - len(input_ids), 0)
        sampling = sampling_dict(req, max_tokens)
        if tools is not None and tools.schema is not None:
            sampling["json_schema"] = tools.schema
        params = validate_sampling(sampling, {**OPENAI_PARAM_NAMES, "sampling_params.max_new_tokens": max_name})

        rid = req.rid or new_id("")
        mask_len = 0
        if wants_capture(req, ctx.server_args) and mask_system_prompt(req, ctx.server_args):
            measure = lambda: self.template.system_prompt_len(messages, prompt, input_ids, template_kwargs)  # noqa: E731
            mask_len = await asyncio.to_thread(measure) if long_prompt else measure()
        # Nothing awaits between taking the capture slot and the try below that releases it.
        capture, slot = prepare_capture(ctx, req, request)
        if capture is not None:  # the one place the system-prompt mask joins the request's own
            capture.mask_prefix = max(capture.mask_prefix, mask_len)
        # a reasoning model thinks freely; its answer follows the constraint (as upstream)
        grammar_after = None
        if ctx.reasoning_parser and params.constrained:
            fmt = get_format(ctx.reasoning_parser)
            if thinking_enabled(fmt, kwargs):
                grammar_after = fmt.think_end
        samples = params.samples()  # n > 1: one engine request per sample, sharing the prompt's KV
        slots = share_slot(slot, len(samples))
        objs = [GenerateReqInput(
            input_ids=input_ids, sampling_params=sp, stream=req.stream, rid=sample_rid(rid, None, j, len(samples)),
            return_logprob=req.logprobs, top_logprobs_num=req.top_logprobs or 0, capture=capture, capture_slot=slots[j],
            custom_logit_processor=req.custom_logit_processor, grammar_after=grammar_after,
            param_names={**OPENAI_PARAM_NAMES, "sampling_params.max_new_tokens": max_name, "input_ids": "messages"},
            group=rid if len(samples) > 1 else None) for j, sp in enumerate(samples)]
        choices = [self._choice_state(j, req, kwargs, capture is not None, tools) for j in range(len(objs))]
        out = await generate_all(ctx, request, objs, slot, (lambda firsts, gens: self._stream(
            req, rid, firsts, gens, choices)) if req.stream else None)
        if isinstance(out, SSEResponse):
            return out
        return json_response(self._complete(req, rid, out, choices))

    def _choice_state(self, index: int, req: ChatCompletionRequest, kwargs: dict[str, Any],
                      capturing: bool, tools: ToolPlan | None) -> "_Choice":
        name = self.ctx.reasoning_parser
        parser = ReasoningParser(name, req.stream_reasoning, kwargs) if name and req.separate_reasoning else None
        tracker = TokenPhaseTracker(name, kwargs) if name and capturing else None
        placer = CapturePlacer(tagging=tracker is not None) if capturing else None
        return _Choice(index, parser, tracker, placer, ToolCallStream(tools.new_parser()) if tools else None)

    def _check_unsupported(self, req: ChatCompletionRequest) -> None:
        if req.top_logprobs is not None:
            if not 0 <= req.top_logprobs <= MAX_TOP_LOGPROBS:
                raise APIError(400, f"top_logprobs: must be between 0 and {MAX_TOP_LOGPROBS}", "top_logprobs")
            if req.top_logprobs and not req.logprobs:
                raise APIError(400, "top_logprobs: requires logprobs = true", "top_logprobs")

    # ---- non-streaming --------------------------------------------------------
    def _complete(self, req: ChatCompletionRequest, rid: str, finals: list[dict[str, Any]],
                  choices: list["_Choice"]) -> dict[str, Any]:
        ctx = self.ctx
        out = []
        for final, st in zip(finals, choices):
            meta = final.get("meta_info", {})
            text = final.get("text", "")
            reasoning, content = st.parser.parse_non_stream(text) if st.parser else (None, text)
            calls = None
            if st.tools is not None:
                content, items = st.tools.parser.parse_non_stream(content)
                calls = message_tool_calls(items) or None
            choice: dict[str, Any] = {
                "index": st.index,
                "message": {"role": "assistant", "content": content if content or not calls else None,
                            "reasoning_content": reasoning, "tool_calls": calls},
                "logprobs": chat_logprobs(ctx, meta) if req.logprobs else None,
            }
            if st.placer is not None:
                phases = st.tracker.feed(final.get("token_texts") or []) if st.tracker else None
                choice.update(st.placer.chunk(final, phases, final=True))
            reason, matched = finish_reason_of(meta)
            choice["finish_reason"] = "tool_calls" if calls and reason == "stop" else reason
            choice["matched_stop"] = matched
            out.append(choice)
        return {
            "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()),
            "model": ctx.model_name, "choices": out, "usage": samples_usage([f.get("meta_info", {}) for f in finals]),
        }

    # ---- streaming ------------------------------------------------------------
    def _stream_choice(self, req: ChatCompletionRequest, st: "_Choice", out: dict[str, Any]) -> dict[str, Any] | None:
        """The choice of one chunk of one sample, or None when it has nothing to send."""
        meta = st.meta = out.get("meta_info", {})
        reason, matched = finish_reason_of(meta)
        delta_text = out.get("delta", "")
        reasoning, content = st.parser.parse_stream_chunk(delta_text) if st.parser else ("", delta_text)
        if reason is not None and st.parser is not None:
            r2, c2 = st.parser.finish()
            reasoning += r2
            content += c2
        calls: list[dict[str, Any]] = []
        if st.tools is not None:
            content, calls = st.tools.feed(content, final=reason is not None)
            if reason == "stop" and st.tools.called:
                reason = "tool_calls"
        delta: dict[str, Any] = {}
        if not st.role_sent:
            delta["role"] = "assistant"
            delta["content"] = ""
            st.role_sent = True
        if content:
            delta["content"] = content
        if reasoning:
            delta["reasoning_content"] = reasoning
        if calls:
            delta["tool_calls"] = calls
        choice: dict[str, Any] = {"index": st.index, "delta": delta, "logprobs": None, "finish_reason": reason}
        if reason is not None:
            choice["matched_stop"] = matched
        if req.logprobs and meta.get("output_token_logprobs"):
            choice["logprobs"] = chat_logprobs(self.ctx, meta)
        if st.placer is not None:
            phases = st.tracker.feed(out.get("token_texts") or []) if st.tracker else None
            choice.update(st.placer.chunk(out, phases, final=reason is not None))
        # Skip empty chunks (text held back by the parser or the detokenizer),
        # except when capture entries or the finish reason must go out.
        if delta or reason is not None or st.placer is not None or choice["logprobs"] is not None:
            return choice
        return None

    async def _stream(self, req: ChatCompletionRequest, rid: str, firsts: list[dict[str, Any]],
                      gens: list[AsyncIterator[dict[str, Any]]], choices: list["_Choice"]) -> AsyncIterator[bytes]:
        base = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self.ctx.model_name}
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        continuous = bool(req.stream_options and req.stream_options.continuous_usage_stats)

        def event(i: int, out: dict[str, Any]) -> bytes | None:
            choice = self._stream_choice(req, choices[i], out)
            if choice is None:
                return None
            chunk: dict[str, Any] = {**base, "choices": [choice]}
            if continuous:
                chunk["usage"] = usage_of(choices[i].meta)
            return sse(chunk)

        for i, first in enumerate(firsts):
            if (ev := event(i, first)) is not None:
                yield ev
        async for i, out in merge_streams(gens):
            if (ev := event(i, out)) is not None:
                yield ev
        if include_usage:
            yield sse({**base, "choices": [], "usage": samples_usage([c.meta for c in choices])})
        yield SSE_DONE


@dataclass
class _Choice:
    """One sample's state in a chat response: its reasoning parser, phase tracker and
    capture placer (each sample has its own), and its latest meta_info."""

    index: int
    parser: ReasoningParser | None
    tracker: TokenPhaseTracker | None
    placer: CapturePlacer | None
    tools: ToolCallStream | None = None
    role_sent: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
