"""Req: one request's state inside the scheduler."""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from sglang.srt.constrained.base_grammar_backend import Grammar
from sglang.srt.managers.io_struct import CaptureParams
from sglang.srt.sampling.sampling_params import SamplingParams


@dataclass(eq=False)  # a request is itself: queues find and remove it by identity
class Req:
    rid: str
    origin_input_ids: list[int]
    params: SamplingParams
    stream: bool
    generator: torch.Generator
    seed: int
    return_logprob: bool = False
    top_logprobs_num: int = 0
    capture: CaptureParams | None = None
    output_ids: list[int] = field(default_factory=list)
    # KV state
    req_pool_idx: int | None = None
    kv_len: int = 0  # tokens whose KV is in the cache (prefix + computed)
    cached_tokens: int = 0  # prompt tokens reused from the radix cache at admission (reported)
    tree_len: int = 0  # leading slots owned by the radix tree (not freed by this request)
    last_node: Any = None  # radix node locked by this request
    # output bookkeeping
    finished_reason: dict[str, Any] | None = None
    sent_len: int = 0  # output tokens already sent to the front end
    pending_logprobs: list[tuple[float, int]] = field(default_factory=list)
    pending_top_logprobs: list[list[tuple[float, int]]] = field(default_factory=list)
    token_ids_logprob: list[int] | None = None
    # (the client's string, the loaded processor) of custom_logit_processor
    logit_processor: tuple[str, Any] | None = None
    pending_ids_logprobs: list[list[tuple[float, int]]] = field(default_factory=list)
    # prompt logprobs: the first prompt position scored (None: not asked, or already sent),
    # and the scores so far (a chunked prefill adds them chunk by chunk)
    prompt_lp_from: int | None = None
    input_logprobs: list[tuple[float, int]] = field(default_factory=list)
    input_top_logprobs: list[list[tuple[float, int]]] = field(default_factory=list)
    capture_state: Any = None  # sglang.srt.capture.ReqCaptureState
    # Adaptive sampling (manifold hints): the switch, once it happened.
    sampling_switch: dict[str, Any] | None = None
    # Fault isolation: forwards this request was part of that failed; while ``probation``
    # is positive it runs alone (a failure then is its own), see Scheduler._recover.
    faults: int = 0
    probation: int = 0
    group: str | None = None  # parallel samples of one prompt (see Scheduler._build_extend)
    # structured outputs: the compile in progress, then the request's grammar matcher
    grammar_future: Future | None = None
    grammar: Grammar | None = None
    # thinking first: the grammar starts once the output holds this marker (text)
    grammar_wait: str | None = None

    @property
    def fill_ids(self) -> list[int]:
        """Tokens that must have KV before the next token can be sampled."""
        return self.origin_input_ids + self.output_ids

    @property
    def active_grammar(self) -> Grammar | None:
        """The grammar that constrains the next token: none while a reasoning model thinks."""
        return self.grammar if self.grammar_wait is None else None

    @property
    def prompt_len(self) -> int:
        return len(self.origin_input_ids)

    @property
    def finished(self) -> bool:
        return self.finished_reason is not None
