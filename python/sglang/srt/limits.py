"""Request limits, in one place: the HTTP server, the offline Engine, the scheduler and the
capabilities endpoint all read them from here (no torch; the HTTP process imports it)."""
from __future__ import annotations

MAX_TOP_K_ATTENTION = 64  # top_k_attention and --attention-tokens-top-k: 1..64
MAX_LOGIT_LENS_TOP_K = 20  # logit_lens_top_k: 1..20
MAX_SINK_TOKENS = 64  # attention_sink_tokens / --attention-sink-tokens: 0..64
MAX_REPLAY_TOKENS = 2048  # dense attention replay: tokens of the sequence
MAX_REPLAY_ELEMENTS = 1 << 26  # and layers x heads x tokens^2 values (128 MiB of float16)
MAX_TOP_LOGPROBS = 20  # top_logprobs (chat), logprobs (completions), top_logprobs_num (/generate)
MAX_NEW_TOKENS = 1 << 20  # max_new_tokens / max_tokens (a null asks for the rest of the context)
MAX_PARALLEL_SAMPLES = 64  # n: samples of one prompt in one request
MAX_LOGIT_BIAS = 1024  # logit_bias entries per request
MAX_GRAMMAR_CHARS = 1 << 20  # a json_schema / regex / ebnf / structural_tag constraint
MAX_PROMPTS_PER_REQUEST = 256  # a batch of prompts in one /generate or /v1/completions request
MAX_BODY_BYTES = 64 << 20  # a request body (413 past it, before it is read)
# Prompts longer than this many characters are rendered and tokenized on a worker thread
# (the tokenizer releases the GIL), so one huge prompt does not stall other streams.
OFF_LOOP_CHARS = 4096
