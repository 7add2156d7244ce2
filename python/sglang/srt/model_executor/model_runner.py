"""ModelRunner: owns the model, the KV memory and the attention backend; runs one forward."""
from __future__ import annotations

import logging
import os

import torch

from sglang.srt.configs.model_config import ModelConfig, resolve_dtype
from sglang.srt.layers.attention.base import AttentionBackend
from sglang.srt.mem_cache.memory_pool import KVPool, ReqToTokenPool, TokenAllocator
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_loader.loader import load_hf_config, load_model
from sglang.srt.model_loader.gguf_cache import materialize
from sglang.srt.model_loader.locate import ModelFiles, locate_model
from sglang.srt.server_args import ServerArgs

logger = logging.getLogger(__name__)

CPU_KV_FRACTION = 0.10  # default share of available RAM for the KV cache on CPU
CPU_KV_CAP_BYTES = 4 << 30


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"--device: unknown device {name!r} (cpu, cuda)")
    return torch.device(name)


def make_attention_backend(name: str, device: torch.device) -> AttentionBackend:
    if name == "torch_native":
        from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

        return TorchNativeAttnBackend()
    if name == "triton":
        from sglang.srt.layers.attention.triton_backend import TritonAttnBackend

        return TritonAttnBackend(device)
    raise ValueError(f"unknown attention backend {name!r}")


class ModelRunner:
    def __init__(self, args: ServerArgs) -> None:
        self.args = args
        self.device = resolve_device(args.device)
        self.files: ModelFiles = locate_model(args.model_path)
        self.source_files = self.files
        self.files = materialize(self.files)  # GGUF -> cached HF folder (converted once)
        self.model_config = ModelConfig.from_hf(load_hf_config(self.files), args.context_length)
        self.dtype = resolve_dtype(args.dtype, getattr(self.model_config.hf_config, "torch_dtype", None), self.device)
        torch.manual_seed(args.random_seed)
        self.model = load_model(self.files, self.model_config, self.dtype, self.device)
        cfg = self.model_config
        self.max_total_tokens = self._kv_budget()
        self.max_running_requests = args.max_running_requests
        self.req_to_token_pool = ReqToTokenPool(self.max_running_requests, cfg.context_length + 1, self.device)
        self.allocator = TokenAllocator(self.max_total_tokens, self.device)
        self.kv_pool = KVPool(self.max_total_tokens, cfg.num_layers, cfg.num_kv_heads, cfg.head_dim,
                              self.dtype, self.device)
        backend = args.attention_backend or ("triton" if self.device.type == "cuda" else "torch_native")
        self.attention_backend_name = backend
        self.attn_backend = make_attention_backend(backend, self.device)
        logger.info("model %s loaded: %s, %s, KV pool %d tokens", self.files.display_name, cfg.architecture,
                    self.dtype, self.max_total_tokens)

    def _kv_budget(self) -> int:
        cfg = self.model_config
        per_tok = KVPool.bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, self.dtype)
        if self.args.max_total_tokens is not None:
            return self.args.max_total_tokens
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            frac = self.args.mem_fraction_static or 0.85
            budget = free - (1 - frac) * total
        else:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            frac = self.args.mem_fraction_static or CPU_KV_FRACTION
            budget = min(avail * frac, CPU_KV_CAP_BYTES if self.args.mem_fraction_static is None else avail)
        tokens = int(budget // per_tok)
        # More than every running request at full context is never useful.
        tokens = min(tokens, self.args.max_running_requests * cfg.context_length)
        if tokens < 16:
            raise ValueError(f"not enough memory for the KV cache ({tokens} tokens); lower the model size or raise "
                             "--mem-fraction-static / --max-total-tokens")
        return tokens

    def forward(self, fb: ForwardBatch) -> torch.Tensor:
        self.attn_backend.init_forward_metadata(fb)
        return self.model(fb.input_ids, fb.positions, fb)
