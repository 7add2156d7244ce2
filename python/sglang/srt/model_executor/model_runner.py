"""ModelRunner: owns the model, the KV memory and the attention backend; runs one forward.

With ``--tp N`` there is one ModelRunner per rank (one process each): it joins the tp
group before building the model, so every layer is built with its rank's slice, and its
KV pool holds only the rank's KV heads. On CUDA it records decode CUDA graphs after the
KV pool exists (see cuda_graph_runner.py for when they are used).
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import torch

from sglang.srt.configs.model_config import ModelConfig, resolve_dtype
from sglang.srt.distributed import divide, init_tensor_parallel
from sglang.srt.layers.attention.base import AttentionBackend
from sglang.srt.mem_cache.memory_pool import KVPool, ReqToTokenPool, TokenAllocator
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.layers import cpu_fused
from sglang.srt.layers.cpu_gemm import packs_panels, prepack_linear_weights
from sglang.srt.model_loader.loader import load_hf_config, load_model
from sglang.srt.model_loader.gguf_cache import materialize
from sglang.srt.model_loader.locate import ModelFiles, locate_model
from sglang.srt.server_args import ServerArgs

if TYPE_CHECKING:
    from sglang.srt.model_executor.cuda_graph_runner import CudaGraphRunner

logger = logging.getLogger(__name__)

CPU_KV_FRACTION = 0.10  # default share of available RAM for the KV cache on CPU
CPU_KV_CAP_BYTES = 4 << 30
# The pool grows to one full-context request when that takes at most this share of free memory.
MAX_CONTEXT_SHARE = 0.5


def resolve_device(name: str, tp_rank: int = 0, tp_size: int = 1) -> torch.device:
    """The device of one tp rank: GPU tp_rank (one GPU per rank) or the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"--device: unknown device {name!r} (cpu, cuda)")
    if name.startswith("cuda") and tp_size > 1:
        if torch.cuda.device_count() < tp_size:
            raise ValueError(f"--tp {tp_size} needs {tp_size} GPUs, {torch.cuda.device_count()} visible")
        return torch.device("cuda", tp_rank)
    return torch.device(name)


def make_attention_backend(name: str, device: torch.device, kv_dtype: torch.dtype | None = None) -> AttentionBackend:
    if name == "torch_native":
        from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

        return TorchNativeAttnBackend(device, kv_dtype)
    if name == "triton":
        from sglang.srt.layers.attention.triton_backend import TritonAttnBackend

        return TritonAttnBackend(device)
    raise ValueError(f"unknown attention backend {name!r}")


class ModelRunner:
    def __init__(self, args: ServerArgs, tp_rank: int = 0, dist_init_method: str | None = None) -> None:
        self.args = args
        self.tp_rank, self.tp_size = tp_rank, args.tp_size
        self.device = resolve_device(args.device, tp_rank, self.tp_size)
        if self.tp_size > 1 and self.device.type == "cpu":
            # the ranks share the cores: one rank per share, not every rank on every core
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.tp_size))
        init_tensor_parallel(self.tp_size, tp_rank, dist_init_method, self.device)
        self.files: ModelFiles = locate_model(args.model_path)
        self.source_files = self.files
        self.files = materialize(self.files)  # GGUF -> cached HF folder (converted once)
        self.model_config = ModelConfig.from_hf(load_hf_config(self.files), args.context_length)
        self.dtype = resolve_dtype(args.dtype, getattr(self.model_config.hf_config, "torch_dtype", None), self.device)
        torch.manual_seed(args.random_seed)
        self.model = load_model(self.files, self.model_config, self.dtype, self.device)
        if not args.disable_cpu_weight_prepack:
            packed = prepack_linear_weights(self.model, self.device, self.dtype)
            if packed:
                logger.info("prepacked %d linear weights for CPU (%s)", packed,
                            "sgl_kernel panels" if packs_panels(self.dtype) else "oneDNN")
        if cpu_fused.prepare(self.device, self.dtype):  # builds the fused C++ ops before serving
            logger.info("fused C++ CPU ops on (norms, rotary, activation, greedy argmax)")
        cfg = self.model_config
        self.num_kv_heads = divide(cfg.num_kv_heads, self.tp_size, "the number of KV heads")  # this rank's
        self.num_heads = divide(cfg.num_heads, self.tp_size, "the number of attention heads")
        self.max_total_tokens = self._kv_budget()
        self.max_running_requests = args.max_running_requests
        self.req_to_token_pool = ReqToTokenPool(self.max_running_requests, cfg.context_length + 1, self.device)
        self.allocator = TokenAllocator(self.max_total_tokens, self.device)
        self.kv_pool = KVPool(self.max_total_tokens, cfg.num_layers, self.num_kv_heads, cfg.head_dim,
                              self.dtype, self.device)
        backend = args.attention_backend or ("triton" if self.device.type == "cuda" else "torch_native")
        self.attention_backend_name = backend
        self.attn_backend = make_attention_backend(backend, self.device, self.dtype)
        self.graph_runner: CudaGraphRunner | None = None
        self._init_cuda_graphs()
        logger.info("model %s loaded: %s, %s, KV pool %d tokens", self.files.display_name, cfg.architecture,
                    self.dtype, self.max_total_tokens)

    def _kv_budget(self) -> int:
        """KV pool size in tokens: --max-total-tokens, else a share of free memory
        (--mem-fraction-static), never below one request at the model's full context when
        memory allows it (a pool smaller than the context refuses long requests up front)."""
        cfg = self.model_config
        per_tok = KVPool.bytes_per_token(cfg.num_layers, self.num_kv_heads, cfg.head_dim, self.dtype)
        if self.args.max_total_tokens is not None:
            if self.args.max_total_tokens < cfg.context_length:
                logger.warning("--max-total-tokens %d is below the context length %d: requests whose prompt plus "
                               "max_new_tokens exceed it are refused", self.args.max_total_tokens, cfg.context_length)
            return self.args.max_total_tokens
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            frac = self.args.mem_fraction_static or 0.85
            budget = free - (1 - frac) * total
            spare = free
        else:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            frac = self.args.mem_fraction_static or CPU_KV_FRACTION
            budget = min(avail * frac, CPU_KV_CAP_BYTES if self.args.mem_fraction_static is None else avail)
            spare = avail
        tokens = int(budget // per_tok)
        # More than every running request at full context is never useful.
        tokens = min(tokens, self.args.max_running_requests * cfg.context_length)
        if tokens < cfg.context_length and cfg.context_length * per_tok <= MAX_CONTEXT_SHARE * spare:
            tokens = cfg.context_length  # one full-context request always fits
        if tokens < 16:
            raise ValueError(f"not enough memory for the KV cache ({tokens} tokens); lower the model size or raise "
                             "--mem-fraction-static / --max-total-tokens")
        if tokens < cfg.context_length:
            logger.warning("KV pool of %d tokens is below the context length %d (not enough free memory): requests "
                           "whose prompt plus max_new_tokens exceed it are refused", tokens, cfg.context_length)
        return tokens

    def _init_cuda_graphs(self) -> None:
        from sglang.srt.model_executor.cuda_graph_runner import graph_ineligibility

        why = graph_ineligibility(self)
        if why is not None:
            if self.device.type == "cuda":
                logger.info("decode runs without CUDA graphs: %s", why)
            return
        self.init_graph_runner(record=True)

    def init_graph_runner(self, record: bool) -> None:
        """Decode graphs for every batch size (``record=False``: the same static buffers and
        capture hand-over, run eagerly; see CudaGraphRunner)."""
        from sglang.srt.model_executor.cuda_graph_runner import CudaGraphRunner, capture_batch_sizes

        if self.attention_backend_name != "triton":  # the graph's kernels write static buffers
            raise ValueError("decode graphs need --attention-backend triton")
        # One extra req_to_token row of zeros that no request can own: padding rows of a
        # replayed graph point at it, so they only touch the pool's padding slot 0.
        pool = self.req_to_token_pool
        pad_row = pool.req_to_token.shape[0]
        pool.req_to_token = torch.cat([pool.req_to_token, torch.zeros_like(pool.req_to_token[:1])])
        # with capture allowed, each size also gets the "stats" and "full" capture graphs
        self.graph_runner = CudaGraphRunner(self, capture_batch_sizes(self.max_running_requests), pad_row,
                                            with_capture=self.args.capture_enabled, record=record)

    def forward(self, fb: ForwardBatch) -> torch.Tensor:
        if self.graph_runner is not None and self.graph_runner.can_run(fb):
            return self.graph_runner.replay(fb)
        self.attn_backend.init_forward_metadata(fb)
        return self.model(fb.input_ids, fb.positions, fb)
