"""Scheduler: continuous batching over the paged KV cache.

Each ``step()`` runs one forward: an EXTEND batch (new requests and the next chunk of a
chunked prefill, up to ``chunked_prefill_size`` tokens) when requests are waiting and fit,
otherwise a DECODE batch of every running request. Requests join and leave the running
batch at every step. When KV memory runs short, new requests wait; if a decode step
cannot get a slot, the newest running request is retracted (its slots freed, it goes back
to the front of the queue and is re-prefilled later), so nothing crashes.

The class is usable in-process (tests drive ``add_request`` / ``step``); the process
entry point in ``scheduler_process.py`` wraps it with ZMQ.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import re
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import torch

from sglang.srt.constrained.base_grammar_backend import GrammarBackend, grammar_key
from sglang.srt.constrained.xgrammar_backend import create_grammar_backend
from sglang.srt.managers.io_struct import ReplayOut, ReplayReq, ReqOutput, SchedulerLoad, TokenizedGenerateReqInput
from sglang.srt.managers.req import Req
from sglang.srt.mem_cache.radix_cache import RadixCache
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode
from sglang.srt.model_executor.model_runner import ModelRunner
from sglang.srt.sampling.custom_logit_processor import load_processor
from sglang.srt.sampling.sampler import SamplingInfo, sample
from sglang.srt.server_args import ServerArgs

if TYPE_CHECKING:
    from sglang.srt.capture.orchestrator import CaptureHook

logger = logging.getLogger(__name__)

DECODE_RESERVE = 8  # KV slots kept free per running request when admitting new ones
# Fault isolation (see _recover): a request that was part of a failed forward runs alone
# for this many forwards (its prefill and one decode); one that keeps being part of failed
# forwards is failed itself after MAX_FAULTS of them.
PROBATION_STEPS = 2
MAX_FAULTS = 3
STOP_REGEX_TOKENS = 64  # output tokens whose text stop_regex patterns are matched against
INTERNAL_ERROR = "internal error while running this request; see the server log"


class Scheduler:
    def __init__(self, args: ServerArgs, runner: ModelRunner | None = None, tokenizer: Any = None) -> None:
        self.args = args
        self.runner = runner or ModelRunner(args)
        self.cfg = self.runner.model_config
        self.device = self.runner.device
        self.tokenizer = tokenizer  # only for stop strings
        self.allocator = self.runner.allocator
        self.req_to_token = self.runner.req_to_token_pool
        self.tree: RadixCache | None = None
        if not args.disable_radix_cache:
            self.tree = RadixCache(self.allocator.free, self.device)
        self.eos_ids = set(self.cfg.eos_token_ids)
        if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
            self.eos_ids.add(tokenizer.eos_token_id)
        self.chunk_size = args.chunked_prefill_size if args.chunked_prefill_size > 0 else 1 << 30
        self.waiting: deque[Req] = deque()
        self.running: list[Req] = []
        self.chunked: Req | None = None  # request in the middle of a chunked prefill
        self.finished_outputs: list[ReqOutput] = []
        self.generated_tokens_total = 0
        self.prompt_tokens_total = 0
        self.cached_tokens_total = 0
        self._seed_counter = 0
        self.capture_hook: CaptureHook | None = None  # set by the capture package when capture is enabled
        # the forward in progress: its requests, and KV slots it allocated that no request's
        # kv_len covers yet (freed if the step fails)
        self._inflight: list[Req] = []
        self._step_slots: torch.Tensor | None = None
        self.failed_steps_total = 0
        # parallel samples (n > 1): live members per group, and the groups whose prompt one
        # member has already prefilled into the radix cache
        self.group_members: dict[str, int] = {}
        self.groups_cached: set[str] = set()
        # structured outputs: the grammar backend, and requests whose grammar is compiling
        self.grammars: GrammarBackend | None = None
        self._grammar_unavailable = "" if tokenizer is not None else "this scheduler runs without a tokenizer"
        if args.grammar_backend != "none" and tokenizer is not None:
            try:
                self.grammars = create_grammar_backend(args.grammar_backend, tokenizer, self.cfg.vocab_size,
                                                       not args.constrained_json_disable_any_whitespace)
            except ImportError as e:  # e.g. a machine without xgrammar: only constrained requests fail
                self._grammar_unavailable = f"the {args.grammar_backend} grammar backend is not installed ({e})"
                logger.warning("structured outputs are unavailable: %s", self._grammar_unavailable)
        self.grammar_queue: list[Req] = []

    # ------------------------------------------------------------------ requests in / out
    def add_request(self, r: TokenizedGenerateReqInput) -> None:
        params = r.sampling_params
        if params.max_new_tokens is None:  # until the context is full
            params = dataclasses.replace(params, max_new_tokens=max(self.cfg.context_length - len(r.input_ids), 0))
        if params.seed is not None:
            seed = params.seed
        else:
            seed = self.args.random_seed * 1_000_003 + self._seed_counter
            self._seed_counter += 1
        req = Req(r.rid, list(r.input_ids), params, r.stream, torch.Generator(device="cpu"), seed, r.return_logprob,
                  r.top_logprobs_num, r.capture, group=r.group)
        req.token_ids_logprob = r.token_ids_logprob
        req.grammar_wait = r.grammar_after or None
        if r.return_logprob:  # -1 (or past the end): only the last prompt token, as upstream
            start = r.logprob_start_len
            req.prompt_lp_from = start if 0 <= start < len(r.input_ids) else len(r.input_ids) - 1
        error = self._validate(req)
        if not error and r.custom_logit_processor is not None:
            try:
                req.logit_processor = (r.custom_logit_processor, load_processor(r.custom_logit_processor))
            except ValueError as e:
                error = str(e)
        if error:
            req.finished_reason = {"type": "abort", "message": error}
            self.finished_outputs.append(self._make_output(req, error=error))
            return
        if params.max_new_tokens == 0 and req.prompt_lp_from is None:  # nothing to compute
            req.finished_reason = {"type": "length", "length": 0}
            self.finished_outputs.append(self._make_output(req))
            return
        if self.capture_hook is not None:
            try:
                self.capture_hook.on_add(req)
            except ValueError as e:
                req.finished_reason = {"type": "abort", "message": str(e)}
                self.finished_outputs.append(self._make_output(req, error=str(e)))
                return
        elif req.capture is not None:
            req.capture = None  # capture is disabled on this server: the front end rejects such requests
        if req.group is not None:
            self.group_members[req.group] = self.group_members.get(req.group, 0) + 1
        key = grammar_key(params)
        if key is None:
            self.waiting.append(req)
            return
        if self.grammars is None:
            why = self._grammar_unavailable or "this server runs with --grammar-backend none"
            self._fail(req, f"sampling_params.{key[0]}: structured outputs are unavailable: {why}", status=400)
            return
        req.grammar_future = self.grammars.submit(key)
        if self.args.tp_size > 1:  # every rank must admit it at the same step: compile in place
            concurrent.futures.wait([req.grammar_future])
        self.grammar_queue.append(req)
        self._poll_grammars()

    def _poll_grammars(self) -> None:
        """Requests whose grammar finished compiling join the queue (or fail with 400 when it
        does not compile). Compiling runs on the backend's thread, beside the steps."""
        if not self.grammar_queue:
            return
        if not (self.waiting or self.running or self.chunked):  # nothing else to do: wait a little
            concurrent.futures.wait([r.grammar_future for r in self.grammar_queue if r.grammar_future], timeout=0.005,
                                    return_when=concurrent.futures.FIRST_COMPLETED)
        still: list[Req] = []
        for req in self.grammar_queue:
            fut = req.grammar_future
            if fut is None or not fut.done():
                still.append(req)
                continue
            req.grammar_future = None
            err = fut.exception()
            if isinstance(err, ValueError):  # the constraint does not compile: the client's error
                self._fail(req, str(err), status=400)
                continue
            if err is not None:
                logger.error("grammar compilation failed for %s", req.rid, exc_info=err)
                self._fail(req, INTERNAL_ERROR)
                continue
            assert self.grammars is not None
            req.grammar = self.grammars.matcher(fut.result())
            for tok in req.output_ids:  # none today; a requeued request would replay its output
                req.grammar.accept_token(tok)
            self.waiting.append(req)
        self.grammar_queue = still

    def _validate(self, req: Req) -> str | None:
        n = req.prompt_len
        if n == 0:
            return "the prompt is empty"
        if n >= self.cfg.context_length:
            return (f"the prompt has {n} tokens, but the model's context length is {self.cfg.context_length} "
                    "(it must leave room for at least one new token)")
        if n + 1 > self.allocator.size:
            return f"the prompt has {n} tokens, more than the whole KV cache ({self.allocator.size} tokens)"
        # The last new token needs no KV slot; every other prompt and output token does.
        m = req.params.max_new_tokens
        assert m is not None  # resolved in add_request
        if n + m - 1 > self.allocator.size:
            return (f"sampling_params.max_new_tokens: the prompt ({n} tokens) plus {m} new tokens can never "
                    f"fit in this server's KV cache ({self.allocator.size} tokens, max_total_num_tokens); "
                    "lower the number of new tokens")
        if max(req.origin_input_ids) >= self.cfg.vocab_size or min(req.origin_input_ids) < 0:
            return f"input_ids must be in [0, {self.cfg.vocab_size})"
        return None

    def replay(self, r: ReplayReq) -> ReplayOut:
        """Dense replay, between steps: one prefill of ``r.input_ids`` on KV slots of its own
        (no radix cache, nothing of it kept), keeping the queries of the asked layers, then
        their full attention with the keys the forward wrote (sgl_kernel.dense_attention).
        Running requests are not touched; KV that cannot be found now is a 503."""
        from sgl_kernel.dense_attention import dense_attention_probs

        t = len(r.input_ids)
        if not 0 < t < self.cfg.context_length or max(r.input_ids) >= self.cfg.vocab_size or min(r.input_ids) < 0:
            return ReplayOut(r.rid, error=f"input_ids: 1..{self.cfg.context_length - 1} token ids in "
                                          f"[0, {self.cfg.vocab_size})")
        row = self.req_to_token.alloc()
        slots = self._alloc(t) if row is not None else None
        if row is None or slots is None:
            if row is not None:
                self.req_to_token.free(row)
            return ReplayOut(r.rid, error="the KV cache is busy; retry later", error_status=503)
        keep = _QueryKeeper(set(r.layers))
        try:
            self.req_to_token.req_to_token[row, :t] = slots.to(torch.int32)
            dev = self.device
            kv_slots = slots.to(dev).long()
            fb = ForwardBatch(
                mode=ForwardMode.EXTEND, batch_size=1, input_ids=torch.tensor(r.input_ids, device=dev),
                positions=torch.arange(t, device=dev), req_pool_indices=torch.tensor([row], device=dev),
                seq_lens=torch.tensor([t], device=dev), out_cache_loc=kv_slots, req_to_token_pool=self.req_to_token,
                kv_pool=self.runner.kv_pool, attn_backend=self.runner.attn_backend,
                extend_seq_lens=torch.tensor([t], device=dev), extend_prefix_lens=torch.tensor([0], device=dev),
                extend_start_loc=torch.tensor([0], device=dev), seq_lens_cpu=[t], extend_seq_lens_cpu=[t],
                extend_prefix_lens_cpu=[0], logits_indices=torch.tensor([t - 1], device=dev), capture=keep)
            self.runner.forward(fb)
            out = []
            for layer in r.layers:
                q, scale, cap = keep.q[layer]
                k = self.runner.kv_pool.get_kv(layer)[0][kv_slots]
                p = dense_attention_probs(q, k, scale=scale, logit_softcap=cap, head_ids=r.head_ids, mean=r.mean)
                if r.mask_prefix:
                    p[:, : r.mask_prefix] = 0
                    p[:, :, : r.mask_prefix] = 0
                out.append(p)
            return ReplayOut(r.rid, probs=torch.stack(out).cpu().numpy())
        finally:
            self.allocator.free(slots)
            self.req_to_token.free(row)

    def reject(self, rid: str, prompt_len: int, message: str, status: int = 400) -> None:
        """Answer a request that never entered the queues with an error."""
        self.finished_outputs.append(ReqOutput(rid, [], {"type": "abort", "message": message}, prompt_len, 0,
                                               error=message, error_status=status))

    def abort(self, rid: str) -> None:
        for req in self.grammar_queue:
            if req.rid == rid:
                self.grammar_queue.remove(req)
                self._finish(req, {"type": "abort", "message": "aborted"})
                return
        for req in list(self.waiting):
            if req.rid == rid:
                self.waiting.remove(req)
                self._finish(req, {"type": "abort", "message": "aborted"})
                return
        candidates = self.running + ([self.chunked] if self.chunked else [])
        for req in candidates:
            if req.rid == rid:
                if req is self.chunked:
                    self.chunked = None
                else:
                    self.running.remove(req)
                self._finish(req, {"type": "abort", "message": "aborted"})
                return

    def flush_cache(self) -> bool:
        """Drop every cached prefix; only possible when nothing is running."""
        if self.running or self.chunked or self.waiting:
            return False
        if self.tree is not None:
            self.tree.evict(1 << 62)
            self.tree.reset()
        return True

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.chunked or self.grammar_queue)

    def load(self) -> SchedulerLoad:
        total = self.allocator.size
        free = self.allocator.available() + (self.tree.evictable_size if self.tree else 0)
        hit = self.cached_tokens_total / self.prompt_tokens_total if self.prompt_tokens_total else 0.0
        dropped = self.capture_hook.dropped if self.capture_hook is not None else 0
        return SchedulerLoad(len(self.running) + (1 if self.chunked else 0), len(self.waiting), total - free, total,
                             hit, self.generated_tokens_total, dropped)

    def kv_available(self) -> int:
        """Slots that are free or could be freed by evicting unused cache entries."""
        return self.allocator.available() + (self.tree.evictable_size if self.tree else 0)

    # ------------------------------------------------------------------ memory helpers
    def _alloc(self, n: int) -> torch.Tensor | None:
        slots = self.allocator.alloc(n)
        if slots is None and self.tree is not None:
            self.tree.evict(n - self.allocator.available())
            slots = self.allocator.alloc(n)
        return slots

    def _release(self, req: Req) -> None:
        """Give back the request's KV: cached tokens go to the radix tree, the rest is freed."""
        if req.req_pool_idx is None:
            return
        row = self.req_to_token.req_to_token[req.req_pool_idx]
        slots = row[: req.kv_len].long().clone()
        if self.tree is not None:
            key = req.fill_ids[: req.kv_len]
            dup = self.tree.insert(key, slots)
            self.allocator.free(slots[req.tree_len:dup])  # ours, duplicated by the tree
            if req.last_node is not None:
                self.tree.dec_lock_ref(req.last_node)
        else:
            self.allocator.free(slots)
        req.last_node = None
        self.req_to_token.free(req.req_pool_idx)
        req.req_pool_idx = None

    def _cache_prefix(self, req: Req) -> None:
        """After a prefill, share the prompt's KV through the tree while the request runs."""
        if self.tree is None:
            return
        row = self.req_to_token.req_to_token[req.req_pool_idx]
        key = req.fill_ids[: req.kv_len]
        slots = row[: req.kv_len].long().clone()
        dup = self.tree.insert(key, slots)
        self.allocator.free(slots[req.tree_len:dup])
        new_slots, node = self.tree.match_prefix(key)
        row[: len(new_slots)] = new_slots.to(row.dtype)
        self.tree.inc_lock_ref(node)
        if req.last_node is not None:
            self.tree.dec_lock_ref(req.last_node)
        req.last_node = node
        req.tree_len = len(new_slots)

    def _retract(self, req: Req) -> None:
        logger.warning("KV cache full: retracting request %s (it will be re-prefilled)", req.rid)
        self._requeue(req)

    def _detach(self, req: Req) -> None:
        """Take the request out of the running batch, the chunked slot or the queue."""
        if req is self.chunked:
            self.chunked = None
        self.running = [r for r in self.running if r is not req]
        if any(r is req for r in self.waiting):
            self.waiting = deque(r for r in self.waiting if r is not req)

    def _requeue(self, req: Req) -> None:
        """Back to the front of the queue; its computed KV goes to the radix cache, and it
        is prefilled again from its prompt and output so far (sampling continues exactly:
        the draws depend on seed and position only)."""
        self._detach(req)
        self._release(req)
        req.kv_len = req.cached_tokens = req.tree_len = 0
        req.input_logprobs, req.input_top_logprobs = [], []  # scored again (unless already sent)
        self.waiting.appendleft(req)

    # ------------------------------------------------------------------ batch building
    def _admit(self, req: Req) -> bool:
        """Give a waiting request a req_to_token row and its cached prefix."""
        row = self.req_to_token.alloc()
        if row is None:
            return False
        req.req_pool_idx = row
        fill = req.fill_ids
        req.kv_len = req.cached_tokens = req.tree_len = 0
        # Prompt attention needs every prompt query computed, so such requests skip the cache.
        wants_prompt = req.capture is not None and req.capture.include_prompt_attention
        if self.tree is not None and not wants_prompt:
            # At least the last token must be computed, to get the logits; prompt logprobs
            # need the logits of every position from logprob_start_len on.
            limit = len(fill) - 1 if req.prompt_lp_from is None else min(len(fill) - 1, req.prompt_lp_from)
            prefix, node = self.tree.match_prefix(fill[:limit])
            self.tree.inc_lock_ref(node)
            req.last_node = node
            n = len(prefix)
            self.req_to_token.req_to_token[row, :n] = prefix.to(torch.int32)
            req.kv_len = req.cached_tokens = req.tree_len = n
        self.prompt_tokens_total += len(fill)
        self.cached_tokens_total += req.cached_tokens
        return True

    def _unadmit(self, req: Req) -> None:
        if self.tree is not None and req.last_node is not None:
            self.tree.dec_lock_ref(req.last_node)
        req.last_node = None
        self.prompt_tokens_total -= len(req.fill_ids)
        self.cached_tokens_total -= req.cached_tokens
        row = req.req_pool_idx
        assert row is not None  # _admit gave it one
        self.req_to_token.free(row)
        req.req_pool_idx = None
        req.kv_len = req.cached_tokens = req.tree_len = 0

    def _build_extend(self) -> tuple[list[Req], list[int]] | None:
        budget = self.chunk_size
        reqs: list[Req] = []
        takes: list[int] = []
        reserve = DECODE_RESERVE * len(self.running)
        pending = 0  # slots this batch will allocate
        if self.chunked is not None:
            req = self.chunked
            # Never more than memory allows: a partly prefilled request keeps its slots and waits.
            take = min(len(req.fill_ids) - req.kv_len, budget, self.kv_available() - reserve)
            if take <= 0:
                return None
            reqs.append(req)
            takes.append(take)
            budget -= take
            pending += take
        while self.waiting and budget > 0 and self.chunked is None:
            if len(self.running) + len(reqs) >= self.args.max_running_requests:
                break
            req = self.waiting[0]
            if req.probation > 0 and reqs:
                break  # a request on probation is prefilled alone
            if (req.group is not None and self.tree is not None and req.group not in self.groups_cached
                    and any(r.group == req.group for r in reqs)):
                break  # a parallel sample waits for its group's prompt to reach the radix cache
            if not self._admit(req):
                break
            need = len(req.fill_ids) - req.kv_len
            take = min(need, budget)
            if self.kv_available() < pending + take + reserve:
                self._unadmit(req)
                break
            self.waiting.popleft()
            reqs.append(req)
            takes.append(take)
            budget -= take
            pending += take
            reserve += DECODE_RESERVE
            if take < need:
                self.chunked = req  # continues in the next extend
                break
            if req.probation > 0:
                break
        if not reqs:
            return None
        return reqs, takes

    def _forward_extend(self, reqs: list[Req], takes: list[int]) -> torch.Tensor:
        total = sum(takes)
        slots = self._alloc(total)
        if slots is None:  # _build_extend checked the memory, so this is a bug, not a load condition
            raise RuntimeError(f"KV allocation of {total} slots failed after admission control")
        self._step_slots = slots
        ids: list[int] = []
        pos: list[int] = []
        starts: list[int] = []
        off = 0
        for req, take in zip(reqs, takes):
            fill = req.fill_ids
            ids.extend(fill[req.kv_len : req.kv_len + take])
            pos.extend(range(req.kv_len, req.kv_len + take))
            self.req_to_token.req_to_token[req.req_pool_idx, req.kv_len : req.kv_len + take] = \
                slots[off : off + take].to(torch.int32)
            starts.append(off)
            off += take
        dev = self.device
        prefix = [r.kv_len for r in reqs]
        seq = [p + t for p, t in zip(prefix, takes)]
        rows, scored = self._prompt_rows(reqs, takes, starts)
        fb = ForwardBatch(
            mode=ForwardMode.EXTEND, batch_size=len(reqs),
            input_ids=torch.tensor(ids, dtype=torch.long, device=dev),
            positions=torch.tensor(pos, dtype=torch.long, device=dev),
            req_pool_indices=torch.tensor([r.req_pool_idx for r in reqs], dtype=torch.long, device=dev),
            seq_lens=torch.tensor(seq, dtype=torch.long, device=dev),
            out_cache_loc=slots.to(dev),
            req_to_token_pool=self.req_to_token, kv_pool=self.runner.kv_pool, attn_backend=self.runner.attn_backend,
            extend_seq_lens=torch.tensor(takes, dtype=torch.long, device=dev),
            extend_prefix_lens=torch.tensor(prefix, dtype=torch.long, device=dev),
            extend_start_loc=torch.tensor(starts, dtype=torch.long, device=dev),
            seq_lens_cpu=seq, extend_seq_lens_cpu=list(takes), extend_prefix_lens_cpu=prefix,
            logits_indices=torch.tensor(rows, dtype=torch.long, device=dev),
        )
        logits = self._run_forward(reqs, fb)
        if scored:
            self._record_prompt_logprobs(scored, logits)
        for req, take in zip(reqs, takes):
            req.kv_len += take
        self._step_slots = None  # the requests' kv_len covers them now
        return logits[: len(reqs)]

    def _prompt_rows(self, reqs: list[Req], takes: list[int], starts: list[int]
                     ) -> tuple[list[int], list[tuple[Req, int, int, int]]]:
        """Logits rows of an extend batch: each request's last token (to sample from), then
        the prompt positions whose logprobs were asked for (position p scores token p + 1).
        Returns the rows and (request, first position, first row, count) per scored run."""
        rows = [s + t - 1 for s, t in zip(starts, takes)]
        scored: list[tuple[Req, int, int, int]] = []
        for req, s, take in zip(reqs, starts, takes):
            if req.prompt_lp_from is None:
                continue
            a, b = max(req.prompt_lp_from, req.kv_len), min(req.prompt_len - 1, req.kv_len + take)
            if a < b:
                scored.append((req, a, len(rows), b - a))
                rows.extend(range(s + a - req.kv_len, s + b - req.kv_len))
        return rows, scored

    def _record_prompt_logprobs(self, scored: list[tuple[Req, int, int, int]], logits: torch.Tensor) -> None:
        for req, first, row, count in scored:
            lp = torch.log_softmax(logits[row: row + count].float(), dim=-1)
            targets = req.origin_input_ids[first + 1: first + 1 + count]
            chosen = lp.gather(1, torch.tensor(targets, device=lp.device).unsqueeze(1)).squeeze(1).tolist()
            req.input_logprobs += list(zip(chosen, targets))
            if req.top_logprobs_num:
                v, i = torch.topk(lp, req.top_logprobs_num, dim=-1)
                req.input_top_logprobs += [list(zip(a, b)) for a, b in zip(v.tolist(), i.tolist())]

    def _run_forward(self, reqs: list[Req], fb: ForwardBatch) -> torch.Tensor:
        """The forward, with the capture hook around it when the batch captures."""
        hook = self.capture_hook
        if hook is not None:
            fb.capture = hook.prepare(reqs, fb)
        logits = self.runner.forward(fb)
        if fb.capture is not None:
            assert hook is not None  # only the hook sets fb.capture
            hook.after_forward(self.runner.model)
        return logits

    def _decode_batch(self) -> list[Req]:
        """Every running request, or one on probation alone (see _recover)."""
        for r in self.running:
            if r.probation > 0:
                return [r]
        return self.running

    def _make_room(self, batch: list[Req]) -> bool:
        """Free KV for a decode batch by sending another request back to the queue: the
        newest running one outside the batch, else a partly prefilled one, else the
        batch's newest. False when nothing can be freed."""
        members = {id(r) for r in batch}
        for r in reversed(self.running):
            if id(r) not in members:
                self._retract(r)
                return True
        if self.chunked is not None:
            self._retract(self.chunked)
            return True
        if len(batch) > 1:
            self._retract(batch[-1])
            batch.pop()
            return True
        return False

    def _forward_decode(self, reqs: list[Req]) -> torch.Tensor:
        # Make sure every request of the batch gets a slot, retracting others if needed.
        reqs = list(reqs)
        while True:
            slots = self._alloc(len(reqs))
            if slots is not None:
                break
            if not self._make_room(reqs):
                raise RuntimeError(f"the KV cache ({self.allocator.size} tokens) cannot hold request {reqs[0].rid}")
        self._step_slots = slots
        self._inflight = reqs
        dev = self.device
        for req, s in zip(reqs, slots.tolist()):
            self.req_to_token.req_to_token[req.req_pool_idx, req.kv_len] = s
        seq = [r.kv_len + 1 for r in reqs]
        fb = ForwardBatch(
            mode=ForwardMode.DECODE, batch_size=len(reqs),
            input_ids=torch.tensor([r.output_ids[-1] for r in reqs], dtype=torch.long, device=dev),
            positions=torch.tensor([r.kv_len for r in reqs], dtype=torch.long, device=dev),
            req_pool_indices=torch.tensor([r.req_pool_idx for r in reqs], dtype=torch.long, device=dev),
            seq_lens=torch.tensor(seq, dtype=torch.long, device=dev),
            out_cache_loc=slots.to(dev),
            req_to_token_pool=self.req_to_token, kv_pool=self.runner.kv_pool, attn_backend=self.runner.attn_backend,
            seq_lens_cpu=seq,
        )
        logits = self._run_forward(reqs, fb)
        for req in reqs:
            req.kv_len += 1
        self._step_slots = None
        return logits

    # ------------------------------------------------------------------ one step
    def step(self) -> list[ReqOutput]:
        """Run one forward (if there is work) and return the outputs to send."""
        self._inflight, self._step_slots = [], None
        checkpoint: list[Any] = []
        self._poll_grammars()
        try:
            batch = self._build_extend()
            if batch is not None:
                reqs, takes = batch
                self._inflight = list(reqs)
                checkpoint = self.capture_hook.checkpoint(reqs) if self.capture_hook is not None else []
                logits = self._forward_extend(reqs, takes)
                done = [(i, r) for i, r in enumerate(reqs) if r.kv_len == len(r.fill_ids)]
                if self.chunked is not None and self.chunked.kv_len == len(self.chunked.fill_ids):
                    self.chunked = None
                for _, r in done:
                    self._cache_prefix(r)
                    self.running.append(r)
                    if r.group is not None:
                        self.groups_cached.add(r.group)
                scoring_only = [r for _, r in done if r.params.max_new_tokens == 0]  # prompt logprobs only
                for r in scoring_only:
                    self.running.remove(r)
                    self._finish(r, {"type": "length", "length": 0})
                done = [(i, r) for i, r in done if r.params.max_new_tokens != 0]
                self._sample_and_update([r for _, r in done], logits[[i for i, _ in done]] if done else None)
            elif self.running:
                reqs = self._decode_batch()
                self._inflight = list(reqs)
                checkpoint = self.capture_hook.checkpoint(reqs) if self.capture_hook is not None else []
                logits = self._forward_decode(reqs)
                self._sample_and_update(self._inflight, logits)
            running = {id(r) for r in self.running}
            for r in self._inflight:  # a forward that sampled a token for it counts
                if r.probation > 0 and id(r) in running:
                    r.probation -= 1
        except Exception as e:  # noqa: BLE001 - isolate the fault instead of failing every request
            self._recover(checkpoint, e)
        self._inflight = []
        out, self.finished_outputs = self.finished_outputs, []
        for req in list(self.running):
            if req.finished:
                continue
            if req.stream and len(req.output_ids) > req.sent_len:
                out.append(self._output_or_fail(req))
        return out

    def _recover(self, checkpoint: list[Any], exc: BaseException) -> None:
        """Undo a failed step and find the request at fault (see the module docstring)."""
        reqs = [r for r in self._inflight if not r.finished]
        self.failed_steps_total += 1
        logger.error("scheduler step failed (%d request(s): %s)", len(reqs), ", ".join(r.rid for r in reqs[:8]),
                     exc_info=exc)
        if self._step_slots is not None:  # allocated this step, owned by no request yet
            self.allocator.free(self._step_slots)
            self._step_slots = None
        if self.capture_hook is not None:
            self.capture_hook.rollback(checkpoint)
        if not reqs:
            raise exc  # not attributable to a request: the process loop's last resort handles it
        if len(reqs) == 1:
            self._fail(reqs[0], INTERNAL_ERROR)
            return
        for r in reversed(reqs):  # appendleft in reverse keeps their order at the queue's front
            r.faults += 1
            if r.faults >= MAX_FAULTS:
                self._fail(r, INTERNAL_ERROR)
            else:
                r.probation = PROBATION_STEPS
                self._requeue(r)

    def _fail(self, req: Req, message: str, status: int = 500) -> None:
        """End one request with an error; everything else keeps running."""
        self._detach(req)
        self._leave_group(req)
        req.finished_reason = {"type": "abort", "message": message}
        try:
            self._release(req)
        except Exception:  # noqa: BLE001 - the error still reaches the client
            logger.exception("could not release request %s", req.rid)
        self.finished_outputs.append(self._make_output(req, error=message, status=status))

    def _output_or_fail(self, req: Req) -> ReqOutput:
        try:
            return self._make_output(req)
        except Exception:  # noqa: BLE001 - e.g. packing its capture payload
            logger.exception("could not build the output of request %s", req.rid)
            self._fail(req, INTERNAL_ERROR)
            return self.finished_outputs.pop()

    def step_idle(self) -> list[ReqOutput]:
        """Outputs produced without a forward (rejected or aborted requests)."""
        out, self.finished_outputs = self.finished_outputs, []
        return out

    def fail_all(self, message: str) -> list[ReqOutput]:
        """After an unexpected error: end every request with an error, free what can be freed."""
        reqs = list(self.waiting) + self.running + ([self.chunked] if self.chunked else []) + self.grammar_queue
        self.grammar_queue = []
        self.waiting.clear()
        self.running = []
        self.chunked = None
        self.group_members.clear()
        self.groups_cached.clear()
        out = self.step_idle()
        for req in reqs:
            req.finished_reason = {"type": "abort", "message": message}
            try:
                self._release(req)
            except Exception:  # noqa: BLE001 - keep failing the others
                logger.exception("could not release request %s", req.rid)
            out.append(self._make_output(req, error=message, status=500))
        return out

    def _sample_and_update(self, reqs: list[Req], logits: torch.Tensor | None) -> None:
        if not reqs or logits is None:
            return
        infos = [SamplingInfo(r.params, r.generator, r.seed, r.origin_input_ids, r.output_ids, self._banned(r),
                              r.active_grammar, r.logit_processor, r) for r in reqs]
        next_ids, penalized = sample(logits, infos, self.grammars)
        failed = [(r, info) for r, info, t in zip(reqs, infos, next_ids) if t is None]
        if failed:  # sampling raised for these rows alone (logged by the sampler)
            for r, info in failed:  # the client's processor failing is the client's error
                if info.error:
                    self._fail(r, info.error, status=400)
                else:
                    self._fail(r, INTERNAL_ERROR)
            keep = [i for i, t in enumerate(next_ids) if t is not None]
            reqs, next_ids, penalized = [reqs[i] for i in keep], [next_ids[i] for i in keep], penalized[keep]
            if not reqs:
                return
        toks = cast("list[int]", next_ids)  # the rows whose sampling failed (None) are out
        want_lp = [i for i, r in enumerate(reqs) if r.return_logprob]
        if want_lp:
            logprobs = torch.log_softmax(penalized[want_lp], dim=-1)
            self._record_logprobs([reqs[i] for i in want_lp], logprobs, [toks[i] for i in want_lp])
        if self.capture_hook is not None:
            self.capture_hook.after_step(reqs, toks)
        for req, tok in zip(reqs, toks):
            grammar = req.active_grammar
            if grammar is not None and not grammar.accept_token(tok):
                # the mask allowed only tokens the grammar accepts: this is a bug, not the client's
                logger.error("request %s: the grammar rejected sampled token %d", req.rid, tok)
                self._fail(req, INTERNAL_ERROR)
                continue
            req.output_ids.append(tok)
            self.generated_tokens_total += 1
            if req.grammar_wait is not None and self._thinking_ended(req):
                req.grammar_wait = None  # the grammar constrains the answer from the next token
            reason = self._check_finished(req, tok)
            if reason is not None:
                self.running.remove(req)
                self._finish(req, reason)

    def _record_logprobs(self, reqs: list[Req], logprobs: torch.Tensor, toks: list[int]) -> None:
        chosen = logprobs.gather(1, torch.tensor(toks, device=logprobs.device).unsqueeze(1)).squeeze(1).tolist()
        k = max(r.top_logprobs_num for r in reqs)
        top: tuple[list[list[float]], list[list[int]]] | None = None  # (log-probabilities, token ids) per row
        if k > 0:
            top_v, top_i = torch.topk(logprobs, k, dim=-1)
            top = (top_v.tolist(), top_i.tolist())
        for j, req in enumerate(reqs):
            req.pending_logprobs.append((chosen[j], toks[j]))
            if req.token_ids_logprob:
                ids = req.token_ids_logprob
                vals = logprobs[j, torch.tensor(ids, device=logprobs.device)].tolist()
                req.pending_ids_logprobs.append(list(zip(vals, ids)))
            if req.top_logprobs_num > 0 and top is not None:
                n = req.top_logprobs_num
                req.pending_top_logprobs.append(list(zip(top[0][j][:n], top[1][j][:n])))

    def _thinking_ended(self, req: Req) -> bool:
        """The output's text now holds the end-of-thinking marker (checked after every
        token, so the first time it shows is when it was completed)."""
        marker = req.grammar_wait
        if not marker or self.tokenizer is None:
            return True
        return marker in self.tokenizer.decode(req.output_ids[-(len(marker) + 2):])

    def _banned(self, req: Req) -> tuple[int, ...]:
        """min_new_tokens: until the output has that many tokens, no stop token (EOS
        included, unless ignore_eos) can be sampled."""
        p = req.params
        if len(req.output_ids) >= p.min_new_tokens:
            return ()
        return tuple(sorted(set(p.stop_token_ids) | (set() if p.ignore_eos else self.eos_ids)))

    def _check_finished(self, req: Req, tok: int) -> dict[str, Any] | None:
        p = req.params
        grammar = req.active_grammar
        if grammar is not None and grammar.is_terminated():  # the grammar took its stop token
            return {"type": "stop", "matched": tok}
        if len(req.output_ids) < p.min_new_tokens:  # stop tokens and strings wait for the minimum
            return self._length_reached(req)
        if tok in p.stop_token_ids or (not p.ignore_eos and tok in self.eos_ids):
            return {"type": "stop", "matched": tok}
        length = self._length_reached(req)
        if length is not None:
            return length
        if p.stop and self.tokenizer is not None:
            longest = max(len(s) for s in p.stop)
            tail = self.tokenizer.decode(req.output_ids[-(longest + 2):])
            for s in p.stop:
                if s in tail:
                    return {"type": "stop", "matched": s}
        if p.stop_regex and self.tokenizer is not None:
            # matched on the last STOP_REGEX_TOKENS tokens' text (a match can span no more)
            tail = self.tokenizer.decode(req.output_ids[-STOP_REGEX_TOKENS:])
            for pattern in p.stop_regex:
                if re.search(pattern, tail):
                    return {"type": "stop", "matched": pattern, "regex": True}
        return None

    def _length_reached(self, req: Req) -> dict[str, Any] | None:
        limit = req.params.max_new_tokens
        assert limit is not None  # resolved in add_request
        if len(req.output_ids) >= limit:
            return {"type": "length", "length": limit}
        if req.prompt_len + len(req.output_ids) >= self.cfg.context_length:
            return {"type": "length", "length": len(req.output_ids)}
        return None

    def _leave_group(self, req: Req) -> None:
        g = req.group
        if g is not None and g in self.group_members:
            self.group_members[g] -= 1
            if self.group_members[g] <= 0:
                del self.group_members[g]
                self.groups_cached.discard(g)

    def _finish(self, req: Req, reason: dict[str, Any]) -> None:
        self._leave_group(req)
        req.finished_reason = reason
        self._release(req)
        if self.capture_hook is not None:
            self.capture_hook.on_finish(req)
        self.finished_outputs.append(self._make_output(req))

    def _make_output(self, req: Req, error: str | None = None, status: int = 400) -> ReqOutput:
        new = req.output_ids[req.sent_len :]
        req.sent_len = len(req.output_ids)
        out = ReqOutput(
            rid=req.rid, new_token_ids=new, finished_reason=req.finished_reason,
            prompt_tokens=req.prompt_len, completion_tokens=len(req.output_ids), cached_tokens=req.cached_tokens,
            error=error, error_status=status,
        )
        if error is not None:
            return out  # the front end raises on it: nothing else of it is read
        if req.return_logprob:
            out.token_logprobs, req.pending_logprobs = req.pending_logprobs, []
            if req.top_logprobs_num:
                out.top_logprobs, req.pending_top_logprobs = req.pending_top_logprobs, []
            if req.token_ids_logprob:
                out.token_ids_logprobs, req.pending_ids_logprobs = req.pending_ids_logprobs, []
            start = req.prompt_lp_from
            if start is not None and req.kv_len >= req.prompt_len:  # prefilled: its prompt logprobs, once
                out.input_token_logprobs = [(None, req.origin_input_ids[start]), *req.input_logprobs]
                if req.top_logprobs_num:
                    out.input_top_logprobs = [None, *req.input_top_logprobs]
                req.prompt_lp_from, req.input_logprobs, req.input_top_logprobs = None, [], []
        if self.capture_hook is not None:
            out.capture = self.capture_hook.take_payload(req)
            out.logit_lens = self.capture_hook.take_lens(req)
        out.sampling_switch = req.sampling_switch
        return out


class _QueryKeeper:
    """A CaptureSink that keeps the queries of some layers of one forward (dense replay)."""

    def __init__(self, layers: set[int]) -> None:
        self.layers = layers
        self.q: dict[int, tuple[torch.Tensor, float, float]] = {}
        self.fused_stats: dict[int, torch.Tensor] = {}

    def on_layer(self, layer: Any, q: torch.Tensor, lse: torch.Tensor | None, fb: ForwardBatch) -> None:
        if layer.layer_id in self.layers:
            self.q[layer.layer_id] = (q.detach().clone(), layer.scaling, layer.logit_softcap)

    def fused_mask_prefix(self, layer_id: int) -> torch.Tensor | None:
        return None

    def stats_buffer(self, layer_id: int, batch_size: int, num_heads: int) -> torch.Tensor:
        raise RuntimeError("dense replay never fuses statistics")
