"""Typed messages between the front end (HTTP / offline Engine) and the scheduler.

The HTTP side never imports model or kernel code: everything it knows about a request
travels in these dataclasses (pickled over ZMQ). Capture results travel as compact
numpy arrays inside ``BatchTokenOut``, not as per-value Python objects.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sglang.srt.limits import MAX_LOGIT_LENS_TOP_K, MAX_SINK_TOKENS, MAX_TOP_K_ATTENTION

if TYPE_CHECKING:
    from sglang.srt.capture.wire import Payload
    from sglang.srt.sampling.sampling_params import SamplingParams

CaptureMode = Literal["raw", "sketch", "fingerprint"]


def auto_layers(num_layers: int) -> list[int]:
    """What ``attention_capture_layers: "auto"`` captures: about L/4, L/2, 3L/4 and the last layer."""
    L = num_layers
    return sorted({L // 4, L // 2, (3 * L) // 4, L - 1})


@dataclass
class CaptureParams:
    """What one request asks to capture, already validated against the server limits."""

    mode: CaptureMode = "raw"
    top_k: int = 5
    layers: list[int] = field(default_factory=list)  # resolved layer ids
    head_ids: list[int] | None = None  # None = all query heads (of rank 0)
    # per-head capture (raw mode): one entry per head of this list instead of the head mean
    heads_each: list[int] | None = None
    # the attention sink: positions < sink_tokens (their mass is reported as sink_mass)
    sink_tokens: int = 1
    # fingerprint definition: 2 = sink-aware (the non-sink keys, renormalized), 1 = the original
    fingerprint_version: int = 2
    mask_prefix: int = 0  # positions < mask_prefix are private
    include_prompt_attention: bool = False
    stride: int = 1  # capture every stride-th decode step
    window: int = 0  # 0 = all keys
    max_steps: int = 0  # 0 = unlimited (--attention-tokens-max / fingerprint max steps)
    chunk_size: int = 2048
    # switch temperature/top_p to the manifold hint once the fingerprint settles in a cluster
    adaptive_sampling: bool = False
    # logit lens at these layers of every captured decode step (empty: off), top-k tokens
    logit_lens_layers: list[int] = field(default_factory=list)
    logit_lens_top_k: int = 5
    # the prompt length ``resolved`` checked these params for (-1: not resolved): later
    # stages trust resolved params instead of checking them again
    resolved_for: int = -1

    def resolved(self, num_layers: int, num_heads: int, prompt_len: int) -> "CaptureParams":
        """These params checked against the model and the prompt, in final form: layers sorted
        and unique (none: the last layer), the mask clamped to the prompt (output tokens are
        the model's, never the caller's). Raises ValueError naming the request field. The one
        check of capture params: the front end's door (HTTP and offline Engine alike) and an
        in-process scheduler (CaptureHook.on_add) both call it."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        layers = sorted(set(self.layers)) or [num_layers - 1]
        bad = [l for l in layers if not 0 <= l < num_layers]
        need(not bad, f"attention_capture_layers: layer {bad[0] if bad else 0} is outside 0..{num_layers - 1}")
        lens = sorted(set(self.logit_lens_layers))
        need(all(0 <= l < num_layers for l in lens), f"logit_lens_layers: layer ids must be in 0..{num_layers - 1}")
        for name, heads in (("attention_capture_head_ids", self.head_ids), ("attention_capture_heads", self.heads_each)):
            need(heads is None or (bool(heads) and all(0 <= h < num_heads for h in heads)),
                 f"{name}: a non-empty list of head ids in 0..{num_heads - 1}")
        need(self.mode in ("raw", "sketch", "fingerprint"), f"capture mode must be raw, sketch or fingerprint, "
                                                             f"got {self.mode!r}")
        need(1 <= self.top_k <= MAX_TOP_K_ATTENTION, f"top_k_attention: must be between 1 and {MAX_TOP_K_ATTENTION}")
        need(0 <= self.sink_tokens <= MAX_SINK_TOKENS, f"attention_sink_tokens: must be in 0..{MAX_SINK_TOKENS}")
        need(self.fingerprint_version in (1, 2), "attention_fingerprint_version: must be 1 or 2")
        need(1 <= self.logit_lens_top_k <= MAX_LOGIT_LENS_TOP_K,
             f"logit_lens_top_k: must be between 1 and {MAX_LOGIT_LENS_TOP_K}")
        need(self.stride >= 1 and self.window >= 0 and self.max_steps >= 0 and self.chunk_size >= 1,
             "capture stride, chunk size must be >= 1; window, max steps >= 0")
        need(not (self.adaptive_sampling and self.mode != "fingerprint"),
             "attention_adaptive_sampling: needs fingerprint capture (attention_fingerprint_mode)")
        need(not (self.heads_each and self.mode != "raw"), "attention_capture_heads: per-head capture is raw mode")
        return dataclasses.replace(self, layers=layers, logit_lens_layers=lens,
                                   mask_prefix=min(max(0, self.mask_prefix), prompt_len), resolved_for=prompt_len)


@dataclass
class GenerateReqInput:
    """A generation request as the front end receives it (text or token ids)."""

    text: str | None = None
    input_ids: list[int] | None = None
    # a dict (offline Engine) or the SamplingParams the HTTP handler validated at the door
    sampling_params: "dict[str, Any] | SamplingParams" = field(default_factory=dict)
    stream: bool = False
    rid: str | None = None
    return_logprob: bool = False
    top_logprobs_num: int = 0
    # prompt logprobs from this position on (-1: the last prompt token only), as upstream
    logprob_start_len: int = -1
    # logprobs of these token ids at every output position (upstream's token_ids_logprob)
    token_ids_logprob: list[int] | None = None
    # upstream's CustomLogitProcessor.to_str() (needs --enable-custom-logit-processor)
    custom_logit_processor: str | None = None
    # a reasoning model's thinking is free: the grammar applies once the output has this
    # end-of-thinking marker (text); None = from the first token
    grammar_after: str | None = None
    capture: CaptureParams | None = None
    # Client-visible names of internal fields in error messages (e.g. input_ids -> messages,
    # sampling_params.max_new_tokens -> max_tokens on the OpenAI endpoints).
    param_names: dict[str, str] = field(default_factory=dict)
    # The HTTP side's capture slot (released when the request ends, however it ends).
    capture_slot: Any = None
    # set on each parallel sample (n > 1) of one prompt: the parent request id
    group: str | None = None


@dataclass
class TokenizedGenerateReqInput:
    """TokenizerManager -> Scheduler."""

    rid: str
    input_ids: list[int]
    sampling_params: Any  # SamplingParams (kept Any so io_struct imports nothing heavy)
    stream: bool
    return_logprob: bool = False
    top_logprobs_num: int = 0
    capture: CaptureParams | None = None
    # parallel samples (n > 1) of one prompt share its KV: the scheduler prefills one of
    # them first, the others then find the prompt in the radix cache
    group: str | None = None
    logprob_start_len: int = -1
    token_ids_logprob: list[int] | None = None
    custom_logit_processor: str | None = None
    grammar_after: str | None = None


@dataclass
class ReplayReq:
    """Dense replay: the full attention of ``layers`` over a sequence (see Scheduler.replay)."""

    rid: str
    input_ids: list[int]
    layers: list[int]
    head_ids: list[int] | None  # None = every query head (of rank 0)
    mean: bool  # one matrix per layer: the mean over those heads
    mask_prefix: int = 0  # rows and columns of positions < mask_prefix are zero (private)


@dataclass
class ReplayOut:
    rid: str
    probs: Any = None  # numpy float16 [layers, heads (1 with mean), T, T]
    error: str | None = None
    error_status: int = 400


@dataclass
class AbortReq:
    rid: str


@dataclass
class FlushCacheReq:
    pass


@dataclass
class GetLoadReq:
    """Ask the scheduler for its current load and KV usage (for /metrics, /get_server_info)."""


@dataclass
class ReqOutput:
    """New output of one request since its last message."""

    rid: str
    new_token_ids: list[int]
    finished_reason: dict[str, Any] | None  # {"type": "stop"|"length"|"abort", "matched": ...}
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    # logprobs of each new token: list of (logprob, token_id), and top alternatives.
    token_logprobs: list[tuple[float, int]] | None = None
    top_logprobs: list[list[tuple[float, int]]] | None = None
    # prompt logprobs (once, after the prefill): (logprob, token_id) from logprob_start_len
    # on, the first None (nothing before it was scored), and their top alternatives
    input_token_logprobs: list[tuple[float | None, int]] | None = None
    input_top_logprobs: list[list[tuple[float, int]] | None] | None = None
    # per new token: (logprob, token_id) of each id of token_ids_logprob
    token_ids_logprobs: list[list[tuple[float, int]]] | None = None
    # Capture payload for the steps in this message: the request's rows, references into the
    # step's shared blocks (streaming) or its own copies (see capture/wire.py)
    capture: Payload | None = None
    # Logit lens entries of the steps in this message (see capture.logit_lens)
    logit_lens: list[dict[str, Any]] | None = None
    # Adaptive sampling switch {"step", "before", "after", "cluster_id", "zone"}, once it happened.
    sampling_switch: dict[str, Any] | None = None
    error: str | None = None
    # HTTP-style status of ``error``: 400 when the request itself is invalid, 500 when the
    # engine failed while running it (only the request at fault gets it), 503 on shutdown
    error_status: int = 400


class RequestFailed(RuntimeError):
    """The engine could not finish a valid request (an internal fault, or shutdown).

    Carries the HTTP status the front end answers with (500-class); invalid input is a
    ``ValueError`` instead (400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class BatchTokenOut:
    """Scheduler -> TokenizerManager: everything one scheduler step produced."""

    outputs: list[ReqOutput]


@dataclass
class SchedulerLoad:
    num_running: int
    num_waiting: int
    kv_used_tokens: int
    kv_total_tokens: int
    cache_hit_rate: float
    generated_tokens_total: int
    capture_sidecar_dropped: int = 0
