"""TokenizerManager: the front end's side of the engine (runs in the HTTP / caller process).

It tokenizes, sends requests to the scheduler process over ZMQ, receives each step's
outputs, detokenizes incrementally and hands results to the caller as an async iterator.
It never touches model code.
"""
from __future__ import annotations

import asyncio
import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import zmq
import zmq.asyncio

from sglang.srt.managers.detokenizer import IncrementalDecoder
from sglang.srt.managers.io_struct import (
    AbortReq,
    BatchTokenOut,
    FlushCacheReq,
    GenerateReqInput,
    GetLoadReq,
    ReqOutput,
    ReplayOut,
    ReplayReq,
    RequestFailed,
    SchedulerLoad,
    TokenizedGenerateReqInput,
)
from sglang.srt.limits import OFF_LOOP_CHARS
from sglang.srt.sampling.sampling_params import SamplingParams
from sglang.srt.server_args import ServerArgs

logger = logging.getLogger(__name__)


_POOL: ThreadPoolExecutor | None = None


def _tokenize_pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tokenize")
    return _POOL


class OverloadedError(RuntimeError):
    """Too many requests are waiting: the caller should answer 503."""


@dataclass
class _ReqState:
    obj: GenerateReqInput
    params: SamplingParams
    prompt_len: int
    decoder: IncrementalDecoder
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    output_ids: list[int] = field(default_factory=list)
    text: str = ""  # text released to the caller
    held: str = ""  # text held back while it could still be the start of a stop string
    finished: bool = False
    prompt_ids: list[int] | None = None  # kept for capture's prompt labels (not tokenized twice)


class TokenizerManager:
    def __init__(self, args: ServerArgs, tokenizer: Any, model_info: dict[str, Any], ipc: dict[str, str]) -> None:
        self.server_args = args
        self.tokenizer = tokenizer
        self.model_info = model_info
        self.ipc = ipc
        self.context_length: int = model_info["context_length"]
        self.vocab_size: int = model_info["vocab_size"]
        self.states: dict[str, _ReqState] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._send: zmq.asyncio.Socket | None = None
        self._recv_task: asyncio.Task | None = None
        self._load_waiters: list[asyncio.Future] = []
        self._flush_waiters: list[asyncio.Future] = []
        self._replay_waiters: dict[str, asyncio.Future] = {}
        self.scheduler_procs: list[Any] = []
        self.is_ready = True

    # ------------------------------------------------------------------ plumbing
    def _ensure_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._ctx is not None:  # a new event loop (e.g. a second Engine call): reconnect
            self._ctx.destroy(linger=0)
        self._loop = loop
        self._ctx = zmq.asyncio.Context()
        self._send = self._ctx.socket(zmq.PUSH)
        self._send.connect(self.ipc["to_scheduler"])
        recv = self._ctx.socket(zmq.PULL)
        recv.connect(self.ipc["to_tokenizer"])
        self._recv_task = loop.create_task(self._recv_loop(recv))

    async def _recv_loop(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            msg = await sock.recv_pyobj()
            if isinstance(msg, BatchTokenOut):
                for out in msg.outputs:
                    st = self.states.get(out.rid)
                    if st is not None:
                        st.queue.put_nowait(out)
            elif isinstance(msg, ReplayOut):
                fut = self._replay_waiters.pop(msg.rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif isinstance(msg, SchedulerLoad):
                waiters, self._load_waiters = self._load_waiters, []
                for w in waiters:
                    if not w.done():
                        w.set_result(msg)
            elif isinstance(msg, bool):
                waiters, self._flush_waiters = self._flush_waiters, []
                for w in waiters:
                    if not w.done():
                        w.set_result(msg)

    # ------------------------------------------------------------------ requests
    def tokenize(self, obj: GenerateReqInput) -> list[int]:
        if obj.input_ids is not None:
            ids = obj.input_ids
            if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise ValueError("input_ids: must be a list of integers")
            if any(t < 0 or t >= self.vocab_size for t in ids):
                raise ValueError(f"input_ids: token ids must be in [0, {self.vocab_size})")
            field_name = "input_ids"
        elif isinstance(obj.text, str):
            ids = self.tokenizer.encode(obj.text)
            field_name = "text"
        else:
            raise ValueError("text: give a prompt as text or input_ids")
        if not ids:
            raise ValueError(f"{field_name}: the prompt is empty")
        if len(ids) >= self.context_length:
            raise ValueError(f"{field_name}: The input ({len(ids)} tokens) is longer than the model's context length "
                             f"({self.context_length} tokens); it must leave room for at least one new token")
        return ids

    async def _tokenize(self, obj: GenerateReqInput) -> list[int]:
        """Long prompts are tokenized on a worker thread (the tokenizer releases the GIL), so
        a megabyte of text does not stall every other stream on the event loop."""
        if isinstance(obj.text, str) and len(obj.text) > OFF_LOOP_CHARS:
            return await asyncio.get_running_loop().run_in_executor(_tokenize_pool(), self.tokenize, obj)
        return self.tokenize(obj)

    def _check_fits(self, params: SamplingParams, n: int) -> None:
        """Refuse at once what can never finish in the context: upstream SGLang's check (the
        scheduler refuses, just as fast, what can never fit its KV pool)."""
        if params.max_new_tokens is None:  # null means "until the context is full"
            params.max_new_tokens = self.context_length - n
        m = params.max_new_tokens
        if n + m > self.context_length:
            raise ValueError(
                f"sampling_params.max_new_tokens: Requested token count exceeds the model's maximum context length "
                f"of {self.context_length} tokens. You requested a total of {n + m} tokens: {n} tokens from the "
                f"input messages and {m} tokens for the completion. Please reduce the number of tokens in the "
                "input messages or the completion to fit within the limit.")

    async def generate_request(self, obj: GenerateReqInput) -> AsyncIterator[dict[str, Any]]:
        self._ensure_loop()
        rid = obj.rid or uuid.uuid4().hex
        if rid in self.states:  # before anything else: a duplicate touches nothing of the first
            raise ValueError(f"rid: request id {rid!r} is already in use")
        # the HTTP handlers validated the params at the door; the offline Engine sends a dict
        sp = obj.sampling_params
        params = sp if isinstance(sp, SamplingParams) else SamplingParams.from_dict(sp)
        params.verify(self.vocab_size)  # the vocabulary-dependent checks (stop_token_ids)
        if obj.token_ids_logprob is not None and any(
                not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < self.vocab_size
                for t in obj.token_ids_logprob):
            raise ValueError(f"token_ids_logprob: token ids must be in [0, {self.vocab_size})")
        if obj.custom_logit_processor is not None:
            if not self.server_args.enable_custom_logit_processor:
                raise ValueError("custom_logit_processor: this server does not run custom logit processors (start it "
                                 "with --enable-custom-logit-processor to allow them)")
            if not isinstance(obj.custom_logit_processor, str) or len(obj.custom_logit_processor) > (1 << 20):
                raise ValueError("custom_logit_processor: must be the string of CustomLogitProcessor.to_str()")
        if sum(1 for s in self.states.values() if not s.finished) >= self.server_args.max_queued_requests + \
                self.server_args.max_running_requests:
            raise OverloadedError("the server is overloaded: too many requests are waiting; retry later")
        ids = await self._tokenize(obj)
        self._check_fits(params, len(ids))
        if not -1 <= obj.logprob_start_len < len(ids):
            raise ValueError(f"logprob_start_len: must be -1 (the last prompt token) or a prompt position in "
                             f"[0, {len(ids)})")
        if obj.capture is not None:  # the one check of capture params, against the model and prompt
            obj.capture = obj.capture.resolved(int(self.model_info["num_layers"]),
                                               int(self.model_info["num_attention_heads"]), len(ids))
        if rid in self.states:  # taken while this one was being tokenized
            raise ValueError(f"rid: request id {rid!r} is already in use")
        obj.rid = rid
        st = _ReqState(obj, params, len(ids), IncrementalDecoder(self.tokenizer, params.skip_special_tokens,
                                                                  params.spaces_between_special_tokens))
        if obj.capture is not None:
            st.prompt_ids = ids
        self.states[rid] = st
        req = TokenizedGenerateReqInput(rid, ids, params, obj.stream, obj.return_logprob, obj.top_logprobs_num,
                                        obj.capture, obj.group, obj.logprob_start_len, obj.token_ids_logprob,
                                        obj.custom_logit_processor, obj.grammar_after)
        assert self._send is not None
        await self._send.send_pyobj(req)
        try:
            async for item in self._results(st):
                yield item
        finally:
            if not st.finished:
                self.abort_request(rid)
            self.states.pop(rid, None)

    async def _results(self, st: _ReqState) -> AsyncIterator[dict[str, Any]]:
        all_lp: list[list[Any]] = []
        all_top: list[Any] = []
        all_ids: list[Any] = []
        prompt_lp: dict[str, Any] = {}  # input_token_logprobs / input_top_logprobs (sent once)
        capture: list[dict[str, Any]] = []
        lens: list[dict[str, Any]] = []
        first = True
        while True:
            out: ReqOutput = await st.queue.get()
            if out.error:
                st.finished = True
                if out.error_status == 400:
                    raise ValueError(out.error)
                raise RequestFailed(out.error_status, out.error)
            final = out.finished_reason is not None
            delta = self._advance_text(st, out, final)
            item = self._make_item(st, out, delta, first)
            first = False
            if st.obj.stream:
                yield item
            else:
                all_lp += item["meta_info"].get("output_token_logprobs", [])
                all_top += item["meta_info"].get("output_top_logprobs", [])
                all_ids += item["meta_info"].get("output_token_ids_logprobs", [])
                prompt_lp.update({k: v for k, v in item["meta_info"].items() if k.startswith("input_")})
                capture += item["meta_info"].get("attention_tokens", [])
                lens += item["meta_info"].get("logit_lens", [])
            if final:
                st.finished = True
                if not st.obj.stream:
                    item.update(text=st.text, delta=st.text, new_token_ids=list(st.output_ids))
                    item["token_texts"] = self._token_texts(st.output_ids)
                    if st.obj.return_logprob:
                        item["meta_info"]["output_token_logprobs"] = all_lp
                        item["meta_info"]["output_top_logprobs"] = all_top
                        if st.obj.token_ids_logprob:
                            item["meta_info"]["output_token_ids_logprobs"] = all_ids
                        item["meta_info"].update(prompt_lp)
                    if st.obj.capture is not None:
                        item["meta_info"]["attention_tokens"] = capture
                        if st.obj.capture.logit_lens_layers:
                            item["meta_info"]["logit_lens"] = lens
                    yield item
                return

    def _advance_text(self, st: _ReqState, out: ReqOutput, final: bool) -> str:
        st.output_ids.extend(out.new_token_ids)
        new = st.decoder.push(out.new_token_ids, final=final)
        pending = st.held + new
        stops = st.params.stop
        reason = out.finished_reason or {}
        if final and isinstance(reason.get("matched"), str) and not st.params.no_stop_trim:
            full = st.text + pending
            if reason.get("regex"):  # stop_regex: cut at the match (text already streamed stays sent)
                m = re.search(reason["matched"], full)
                cut = m.start() if m else -1
            else:
                cut = full.find(reason["matched"], max(0, len(st.text) - len(reason["matched"])))
            if cut >= 0:
                full = full[:cut]
            delta = full[len(st.text):]
            st.text, st.held = full, ""  # (shorter than what was sent when a regex match began in it)
            return delta
        if stops and not final:
            # Hold back the longest tail that could still grow into a stop string.
            keep = 0
            for s in stops:
                for n in range(min(len(s) - 1, len(pending)), 0, -1):
                    if pending.endswith(s[:n]):
                        keep = max(keep, n)
                        break
            delta, st.held = (pending[: len(pending) - keep], pending[len(pending) - keep:]) if keep else (pending, "")
        else:
            delta, st.held = pending, ""
        st.text += delta
        return delta

    def _lens_entry(self, e: dict[str, Any]) -> dict[str, Any]:
        """A logit lens entry with token texts: top_tokens [{id, text, prob}] and token
        {id, text, prob, rank}."""
        ids = list(e["top_token_ids"]) + [e["token_id"]]
        texts = self._token_texts(ids)
        return {"decode_step": e["decode_step"], "layer_id": e["layer_id"],
                "top_tokens": [{"id": i, "text": t, "prob": p} for i, t, p in zip(ids, texts, e["top_probs"])],
                "token": {"id": e["token_id"], "text": texts[-1], "prob": e["token_prob"], "rank": e["token_rank"]}}

    def _labelled(self, pairs: list[Any]) -> list[list[Any]]:
        """(logprob, token_id) pairs -> upstream's [logprob, token_id, token_text] triples."""
        return [[lp, t, s] for (lp, t), s in zip(pairs, self._token_texts([t for _, t in pairs]))]

    def _token_texts(self, ids: list[int]) -> list[str]:
        return self.tokenizer.batch_decode([[i] for i in ids]) if ids else []

    def _make_item(self, st: _ReqState, out: ReqOutput, delta: str, first: bool) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": st.obj.rid,
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "cached_tokens": out.cached_tokens,
            "finish_reason": out.finished_reason,
        }
        if st.obj.return_logprob and out.token_logprobs is not None:
            meta["output_token_logprobs"] = self._labelled(out.token_logprobs)
            if out.top_logprobs is not None:
                meta["output_top_logprobs"] = [self._labelled(row) for row in out.top_logprobs]
            if out.token_ids_logprobs is not None:
                meta["output_token_ids_logprobs"] = [self._labelled(row) for row in out.token_ids_logprobs]
        if st.obj.return_logprob and out.input_token_logprobs is not None:
            meta["input_token_logprobs"] = self._labelled(out.input_token_logprobs)
            if out.input_top_logprobs is not None:
                meta["input_top_logprobs"] = [None if row is None else self._labelled(row)
                                              for row in out.input_top_logprobs]
        if out.sampling_switch is not None:
            meta["attention_adaptive_sampling"] = out.sampling_switch
        if out.logit_lens is not None:
            meta["logit_lens"] = [self._lens_entry(e) for e in out.logit_lens]
        if st.obj.capture is not None:
            from sglang.srt.capture.entries import build_entries  # numpy only; no model code

            meta["attention_tokens"] = build_entries(out.capture, st.prompt_len) if out.capture else []
            if first:
                meta["attention_prompt_tokens"] = self._prompt_tokens(st)
        return {
            "text": st.text,
            "delta": delta,
            "output_ids": list(st.output_ids),
            "new_token_ids": list(out.new_token_ids),
            "token_texts": self._token_texts(out.new_token_ids),
            "meta_info": meta,
        }

    def _prompt_tokens(self, st: _ReqState) -> list[dict[str, Any]]:
        """Labels for prompt positions; private (masked) positions carry no id or text."""
        cap = st.obj.capture
        ids = st.prompt_ids or []
        masked = min(cap.mask_prefix if cap is not None else 0, len(ids))
        texts = self._token_texts(ids[masked:])
        out: list[dict[str, Any]] = [{"position": p, "masked": True} for p in range(masked)]
        out += [{"position": masked + i, "id": t, "text": s, "masked": False}
                for i, (t, s) in enumerate(zip(ids[masked:], texts))]
        return out

    def abort_request(self, rid: str) -> None:
        st = self.states.get(rid)
        if st is not None:
            st.finished = True
        if self._send is not None:
            try:
                self._send.send_pyobj(AbortReq(rid), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                logger.warning("could not send abort for %s", rid)

    def fail_all(self, message: str, status: int = 503) -> int:
        """End every request in flight with an error (server shutdown): a stream sends an
        error event and [DONE] instead of being cut, a waiting response answers ``status``.
        Call it on the event loop's thread. Returns how many requests were ended."""
        n = 0
        for rid, st in list(self.states.items()):
            if st.finished:
                continue
            st.queue.put_nowait(ReqOutput(rid, [], {"type": "abort", "message": message}, st.prompt_len,
                                          len(st.output_ids), error=message, error_status=status))
            n += 1
        return n

    async def replay(self, req: ReplayReq, timeout: float = 600) -> ReplayOut:
        """Dense replay (see Scheduler.replay): the scheduler runs it between steps."""
        self._ensure_loop()
        fut = asyncio.get_running_loop().create_future()
        self._replay_waiters[req.rid] = fut
        assert self._send is not None  # _ensure_loop connected it
        try:
            await self._send.send_pyobj(req)
            return await asyncio.wait_for(fut, timeout=timeout)
        finally:
            self._replay_waiters.pop(req.rid, None)

    async def flush_cache(self) -> bool:
        self._ensure_loop()
        fut = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(fut)
        assert self._send is not None  # _ensure_loop connected it
        await self._send.send_pyobj(FlushCacheReq())
        return await asyncio.wait_for(fut, timeout=30)

    async def get_load(self) -> dict[str, Any]:
        self._ensure_loop()
        fut = asyncio.get_running_loop().create_future()
        self._load_waiters.append(fut)
        assert self._send is not None  # _ensure_loop connected it
        await self._send.send_pyobj(GetLoadReq())
        load: SchedulerLoad = await asyncio.wait_for(fut, timeout=30)
        return {
            "num_running": load.num_running,
            "num_waiting": load.num_waiting,
            "kv_used_tokens": load.kv_used_tokens,
            "kv_total_tokens": load.kv_total_tokens,
            "cache_hit_rate": load.cache_hit_rate,
            "generated_tokens_total": load.generated_tokens_total,
            "capture_sidecar_dropped": getattr(load, "capture_sidecar_dropped", 0),
        }

    def shutdown(self) -> None:
        from sglang.srt.managers.launch import stop_processes

        stop_processes(self.scheduler_procs)
        self.scheduler_procs = []
        if self._recv_task is not None:
            self._recv_task.cancel()
            if self._loop is not None and not self._loop.is_closed() and not self._loop.is_running():
                self._loop.run_until_complete(asyncio.gather(self._recv_task, return_exceptions=True))
            self._recv_task = None
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None
            self._loop = None
