"""Server and engine arguments: one dataclass, one argparse definition, one validation."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sglang.srt.limits import MAX_SINK_TOKENS, MAX_TOP_K_ATTENTION

REASONING_PARSERS = ("qwen3", "qwen3-thinking", "deepseek-r1", "deepseek-v3", "kimi", "glm45", "step3", "minimax")
ATTENTION_BACKENDS = ("torch_native", "triton")
GRAMMAR_BACKENDS = ("xgrammar", "none")
TOOL_CALL_PARSER_NAMES = ("llama3", "mistral", "qwen", "qwen25")  # sglang.srt.function_call.TOOL_CALL_PARSERS
DTYPES = ("auto", "float32", "bfloat16", "float16", "half", "float", "fp32", "bf16", "fp16")
CAPTURE_DEFAULTS = ("off", "raw", "sketch", "fingerprint")


@dataclass
class ServerArgs:
    # model and tokenizer
    model_path: str | None = None  # None = the bundled SmolLM2-135M-Instruct GGUF
    tokenizer_path: str | None = None
    dtype: str = "auto"
    context_length: int | None = None
    served_model_name: str | None = None
    chat_template: str | None = None
    device: str = "auto"
    random_seed: int = 0
    # HTTP
    host: str = "127.0.0.1"
    port: int = 30000
    api_key: str | None = None
    log_level: str = "info"
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    # structured outputs
    grammar_backend: str = "xgrammar"
    enable_custom_logit_processor: bool = False
    constrained_json_disable_any_whitespace: bool = False
    # memory and scheduling
    mem_fraction_static: float | None = None
    max_total_tokens: int | None = None
    max_running_requests: int = 64
    chunked_prefill_size: int = 2048
    max_queued_requests: int = 1024
    disable_radix_cache: bool = False
    # parallelism and kernels
    tp_size: int = 1
    attention_backend: str | None = None  # None: torch_native on CPU, triton on CUDA
    disable_cuda_graph: bool = False
    disable_cpu_weight_prepack: bool = False
    # attention capture (see docs/attention_api.md)
    return_attention_tokens: bool = False
    attention_tokens_top_k: int = 5
    attention_tokens_max: int = 4096
    attention_tokens_stride: int = 1
    attention_tokens_window: int = 0
    attention_sink_tokens: int = 1
    # 2: fingerprints and zones describe the non-sink attention; 1: the original definition
    attention_fingerprint_version: int = 2
    attention_capture_layers: str = "last"
    attention_sketch_mode: bool = False
    attention_fingerprint_mode: bool = False
    attention_fingerprint_max_steps: int = 256
    attention_sidecar_url: str | None = None
    attention_chunk_size: int = 2048
    attention_mask_system_prompt: bool = False
    attention_api_key: str | None = None
    attention_cors_origins: list[str] = field(default_factory=lambda: ["*"])
    attention_max_concurrent_capture: int = 0  # 0 = unlimited
    attention_disable_in_production: bool = False
    attention_capture_default: str = "off"
    # manifold hints and adaptive sampling (docs/deploy.md)
    attention_hints_url: str | None = None
    attention_hints_refresh_interval: float = 10.0
    attention_adaptive_sampling: bool = False
    attention_adaptive_steps: int = 8

    @property
    def capture_enabled(self) -> bool:
        """A flag turns attention capture on (the production switch is the HTTP side's)."""
        return self.return_attention_tokens or self.attention_capture_default != "off"

    @property
    def tp(self) -> int:
        return self.tp_size

    def validate(self) -> None:
        """Raise ValueError with a message naming the flag."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        need(self.dtype in DTYPES, f"--dtype: unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        need(self.context_length is None or self.context_length > 0, "--context-length must be positive")
        need(
            self.mem_fraction_static is None or 0.0 < self.mem_fraction_static < 1.0,
            "--mem-fraction-static must be in (0, 1)",
        )
        need(self.max_total_tokens is None or self.max_total_tokens >= 16, "--max-total-tokens must be at least 16")
        need(self.max_running_requests >= 1, "--max-running-requests must be at least 1")
        need(self.chunked_prefill_size == -1 or self.chunked_prefill_size >= 16,
             "--chunked-prefill-size must be -1 (off) or at least 16")
        need(self.max_queued_requests >= 1, "--max-queued-requests must be at least 1")
        need(self.tp_size >= 1, "--tp must be at least 1")
        need(self.attention_backend is None or self.attention_backend in ATTENTION_BACKENDS,
             f"--attention-backend: choose one of {', '.join(ATTENTION_BACKENDS)}")
        need(self.reasoning_parser is None or self.reasoning_parser in REASONING_PARSERS,
             f"--reasoning-parser: choose one of {', '.join(REASONING_PARSERS)}")
        need(self.tool_call_parser is None or self.tool_call_parser in TOOL_CALL_PARSER_NAMES,
             f"--tool-call-parser: choose one of {', '.join(TOOL_CALL_PARSER_NAMES)}")
        need(self.grammar_backend in GRAMMAR_BACKENDS,
             f"--grammar-backend: choose one of {', '.join(GRAMMAR_BACKENDS)}")
        need(0 < self.port < 65536, "--port must be in 1..65535")
        need(1 <= self.attention_tokens_top_k <= MAX_TOP_K_ATTENTION,
             f"--attention-tokens-top-k must be in 1..{MAX_TOP_K_ATTENTION}")
        need(self.attention_tokens_max >= 0, "--attention-tokens-max must be >= 0 (0 = unlimited)")
        need(self.attention_tokens_stride >= 1, "--attention-tokens-stride must be >= 1")
        need(self.attention_tokens_window >= 0, "--attention-tokens-window must be >= 0 (0 = all keys)")
        need(self.attention_fingerprint_version in (1, 2), "--attention-fingerprint-version must be 1 or 2")
        need(0 <= self.attention_sink_tokens <= MAX_SINK_TOKENS,
             f"--attention-sink-tokens must be in 0..{MAX_SINK_TOKENS}")
        need(self.attention_fingerprint_max_steps >= 0, "--attention-fingerprint-max-steps must be >= 0")
        need(self.attention_chunk_size >= 16, "--attention-chunk-size must be at least 16")
        need(self.attention_max_concurrent_capture >= 0, "--attention-max-concurrent-capture must be >= 0")
        need(not (self.attention_sketch_mode and self.attention_fingerprint_mode),
             "--attention-sketch-mode and --attention-fingerprint-mode are exclusive")
        need(self.attention_hints_refresh_interval > 0, "--attention-hints-refresh-interval must be positive")
        need(self.attention_adaptive_steps >= 1, "--attention-adaptive-steps must be at least 1")
        need(self.attention_hints_url is None or self.attention_hints_url.startswith(("http://", "https://")),
             "--attention-hints-url must be an http:// address of a sidecar")
        need(self.attention_capture_default in CAPTURE_DEFAULTS,
             f"--attention-capture-default: choose one of {', '.join(CAPTURE_DEFAULTS)}")

    @staticmethod
    def add_cli_args(p: argparse.ArgumentParser) -> None:
        a = p.add_argument
        g = p.add_argument_group("model")
        g.add_argument("--model-path", default=None,
                       help="Hugging Face style folder or a .gguf file (default: bundled SmolLM2-135M-Instruct)")
        g.add_argument("--tokenizer-path", default=None, help="tokenizer folder (default: the model's)")
        g.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16 (auto: float32 on CPU, "
                       "the checkpoint's dtype on GPU)")
        g.add_argument("--context-length", type=int, default=None, help="override the model's context length")
        g.add_argument("--served-model-name", default=None, help="model name reported by the API")
        g.add_argument("--chat-template", default=None, help="a Jinja chat template file (default: the model's)")
        g.add_argument("--device", default="auto", help="auto | cpu | cuda")
        g.add_argument("--random-seed", type=int, default=0, help="seed for sampling without a request seed")
        g = p.add_argument_group("HTTP server")
        g.add_argument("--host", default="127.0.0.1", help="address to listen on")
        g.add_argument("--port", type=int, default=30000, help="HTTP port")
        g.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every endpoint")
        g.add_argument("--log-level", default="info", help="debug | info | warning | error")
        g.add_argument("--reasoning-parser", default=None, choices=REASONING_PARSERS,
                       help="split reasoning_content from content for this model family")
        g.add_argument("--tool-call-parser", default=None, choices=TOOL_CALL_PARSER_NAMES,
                       help="parse tool calls out of the model's output in this format (see docs/server.md)")
        g = p.add_argument_group("structured outputs")
        g.add_argument("--grammar-backend", default="xgrammar", choices=GRAMMAR_BACKENDS,
                       help="compiles json_schema / regex / ebnf / structural_tag constraints (none: refuse them)")
        g.add_argument("--constrained-json-disable-any-whitespace", action="store_true",
                       help="JSON-schema outputs without free whitespace (compact JSON)")
        g.add_argument("--enable-custom-logit-processor", action="store_true",
                       help="run requests' custom_logit_processor (client code, deserialized with dill: enable "
                            "only for trusted clients)")
        g = p.add_argument_group("memory and scheduling")
        g.add_argument("--mem-fraction-static", type=float, default=None,
                       help="fraction of device memory for weights + KV cache (GPU; on CPU of free RAM)")
        g.add_argument("--max-total-tokens", type=int, default=None, help="KV pool size in tokens (overrides the fraction)")
        g.add_argument("--max-running-requests", type=int, default=64, help="requests decoded together at most")
        g.add_argument("--chunked-prefill-size", type=int, default=2048,
                       help="largest prefill chunk in tokens (-1 disables chunking)")
        g.add_argument("--max-queued-requests", type=int, default=1024, help="waiting requests beyond this get 503")
        g.add_argument("--disable-radix-cache", action="store_true", help="do not share prompt prefixes")
        g = p.add_argument_group("parallelism and kernels")
        g.add_argument("--tp", "--tp-size", dest="tp_size", type=int, default=1, help="tensor parallel size")
        g.add_argument("--attention-backend", default=None, choices=ATTENTION_BACKENDS,
                       help="torch_native (default on CPU) or triton (default on CUDA)")
        g.add_argument("--disable-cuda-graph", action="store_true",
                       help="never use CUDA graphs (capturing batches always run eagerly anyway)")
        g.add_argument("--disable-cpu-weight-prepack", action="store_true",
                       help="on CPU, keep the weights as loaded instead of a packed copy for the decode GEMMs "
                            "(saves a copy of the weights' memory, costs decode speed)")
        g = p.add_argument_group("attention capture")
        g.add_argument("--return-attention-tokens", action="store_true", help="allow requests to capture attention")
        g.add_argument("--attention-tokens-top-k", type=int, default=5, help="top-k positions per entry (max 64)")
        g.add_argument("--attention-tokens-max", type=int, default=4096,
                       help="captured steps per request at most (0 = unlimited)")
        g.add_argument("--attention-tokens-stride", "--attention-capture-stride", dest="attention_tokens_stride",
                       type=int, default=1, help="capture every Nth decode step")
        g.add_argument("--attention-tokens-window", type=int, default=0,
                       help="only the last N keys are considered (0 = all keys)")
        g.add_argument("--attention-sink-tokens", type=int, default=1,
                       help="the attention sink: the first N positions; their mass is reported as sink_mass "
                            "(0 = none)")
        g.add_argument("--attention-fingerprint-version", type=int, choices=(1, 2), default=2,
                       help="2: fingerprints (and their zones) describe where the non-sink attention goes; "
                            "1: the original definition over every unmasked key")
        g.add_argument("--attention-capture-layers", default="last",
                       help="last | auto (about L/4, L/2, 3L/4, L-1) | comma list of layer ids")
        g.add_argument("--attention-sketch-mode", action="store_true", help="default capture mode: sketch")
        g.add_argument("--attention-fingerprint-mode", action="store_true", help="default capture mode: fingerprint")
        g.add_argument("--attention-fingerprint-max-steps", type=int, default=256,
                       help="stop fingerprinting a request after N decode steps (0 = unlimited)")
        g.add_argument("--attention-sidecar-url", default=None, help="ZMQ address to PUSH fingerprints to")
        g.add_argument("--attention-chunk-size", type=int, default=2048, help="keys per capture chunk")
        g.add_argument("--attention-mask-system-prompt", action="store_true",
                       help="hide the system prompt's positions from every capture field")
        g.add_argument("--attention-api-key", default=None, help="key required for any capture field")
        g.add_argument("--attention-cors-origins", nargs="+", default=["*"], help="allowed CORS origins")
        g.add_argument("--attention-max-concurrent-capture", type=int, default=0,
                       help="capturing requests at once; more get 429 (0 = unlimited)")
        g.add_argument("--attention-disable-in-production", action="store_true",
                       help="turn capture off unless SGLANG_ATTENTION_DEBUG=1 is set")
        g.add_argument("--attention-capture-default", default="off", choices=CAPTURE_DEFAULTS,
                       help="capture every request in this mode without any request field")
        g.add_argument("--attention-hints-url", default=None,
                       help="HTTP address of a sidecar whose cluster centroids and sampling hints the scheduler "
                            "refreshes in the background")
        g.add_argument("--attention-hints-refresh-interval", type=float, default=10.0,
                       help="seconds between centroid refreshes")
        g.add_argument("--attention-adaptive-sampling", action="store_true",
                       help="default for the request field attention_adaptive_sampling")
        g.add_argument("--attention-adaptive-steps", type=int, default=8,
                       help="consecutive fingerprint steps in one cluster before sampling switches to its hint")
        del a

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> "ServerArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ServerArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        if "tp" in kwargs:
            kwargs["tp_size"] = kwargs.pop("tp")
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(f"unknown engine argument {unknown[0]!r}")
        return cls(**kwargs)
