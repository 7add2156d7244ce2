"""Llama-family decoder (Llama 2/3, SmolLM2, Mistral) built from the shared layers.

Qwen2 (q/k/v bias), Qwen3 (per-head q/k RMSNorm) and Qwen3-MoE (sparse MLP) reuse this
file through the switches in ``DecoderSpec``; their modules only set them.

Tensor parallelism (``--tp``): attention heads, KV heads and the MLP's intermediate size
are split over the ranks (column-parallel q/k/v and gate/up, row-parallel o and down),
embedding and LM head over the vocabulary. Every layer reads the tp rank and size when it
is built, so the same code runs unsplit with tp 1. Checkpoint tensors arrive whole; each
module keeps its rank's slice (``load_shard`` / ``load_full``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from sglang.srt.configs.model_config import ModelConfig
from sglang.srt.distributed import divide, get_tp_size
from sglang.srt.layers.activation import SiluAndMul
from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.layers.linear import MergedLinear, RowParallelLinear
from sglang.srt.layers.moe import SparseMoE
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.layers.rotary_embedding import RotaryEmbedding
from sglang.srt.layers.vocab_parallel import ParallelLMHead, VocabParallelEmbedding
from sglang.srt.model_executor.forward_batch_info import ForwardBatch


@dataclass(frozen=True)
class DecoderSpec:
    qkv_bias: bool = False
    qk_norm: bool = False


class MLP(nn.Module):
    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.gate_up_proj = MergedLinear(hidden, {"gate_proj": inter, "up_proj": inter})
        self.down_proj = RowParallelLinear(inter, hidden, bias=False)
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int, spec: DecoderSpec) -> None:
        super().__init__()
        tp = get_tp_size()
        self.hd = cfg.head_dim
        # this rank's heads; q head h of the rank is global head rank * nh + h
        self.nh = divide(cfg.num_heads, tp, "the number of attention heads")
        self.nkv = divide(cfg.num_kv_heads, tp, "the number of KV heads")
        q, kv = cfg.num_heads * self.hd, cfg.num_kv_heads * self.hd
        self.qkv_proj = MergedLinear(cfg.hidden_size, {"q_proj": q, "k_proj": kv, "v_proj": kv},
                                     bias=spec.qkv_bias or cfg.attention_bias)
        self.o_proj = RowParallelLinear(q, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.hd, cfg.rms_norm_eps) if spec.qk_norm else None
        self.k_norm = RMSNorm(self.hd, cfg.rms_norm_eps) if spec.qk_norm else None
        self.rotary = RotaryEmbedding(self.hd, cfg.context_length, cfg.rope_theta, cfg.rope_scaling)
        self.attn = RadixAttention(layer_id, self.nh, self.nkv, self.hd, self.hd**-0.5)

    def forward(self, positions: torch.Tensor, x: torch.Tensor, fb: ForwardBatch) -> torch.Tensor:
        T = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd], dim=-1)
        q, k = q.reshape(T, self.nh, self.hd), k.reshape(T, self.nkv, self.hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary(positions, q, k)
        return self.o_proj(self.attn(q.reshape(T, -1), k.reshape(T, -1), v, fb))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int, spec: DecoderSpec) -> None:
        super().__init__()
        self.self_attn = Attention(cfg, layer_id, spec)
        if cfg.is_moe and layer_id in cfg.moe_layers:
            self.mlp: nn.Module = SparseMoE(cfg.hidden_size, cfg.moe_intermediate_size, cfg.num_experts,
                                            cfg.num_experts_per_tok, cfg.norm_topk_prob)
        else:
            self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, positions: torch.Tensor, h: torch.Tensor, residual: torch.Tensor | None,
                fb: ForwardBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual, h = h, self.input_layernorm(h)
        else:
            h, residual = self.input_layernorm(h, residual)
        h = self.self_attn(positions, h, fb)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class DecoderModel(nn.Module):
    def __init__(self, cfg: ModelConfig, spec: DecoderSpec) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, spec) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, fb: ForwardBatch) -> torch.Tensor:
        h, residual = self.embed_tokens(input_ids), None
        lens = fb.lens
        for i, layer in enumerate(self.layers):
            h, residual = layer(positions, h, residual, fb)
            if lens is not None and i in lens.layers:
                lens.keep(i, h, residual)
        h, _ = self.norm(h, residual)
        return h


_EXPERT = re.compile(r"(.*\.mlp)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_STACKED = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
            "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}


class LlamaForCausalLM(nn.Module):
    spec = DecoderSpec()

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = DecoderModel(cfg, self.spec)
        self.lm_head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, fb: ForwardBatch) -> torch.Tensor:
        """Returns float32 logits of the rows in fb.logits_indices: [B, vocab]."""
        h = self.model(input_ids, positions, fb)
        if fb.logits_indices is not None:
            h = h[fb.logits_indices]
        return self.lm_head(h).float()

    @torch.inference_mode()
    def lens_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logit lens: float32 logits of residual-stream rows [n, hidden] through the final
        norm and the unembedding, as the last layer's output becomes the logits."""
        return self.lm_head(self.model.norm(x)).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy checkpoint tensors (HF names) into the merged parameters; every parameter
        must be covered, or the checkpoint is reported as incomplete."""
        params = dict(self.named_parameters())
        modules = dict(self.named_modules())
        loaded: set[str] = set()
        for name, w in weights:
            if "rotary_emb.inv_freq" in name:
                continue
            if name == "lm_head.weight" and self.config.tie_word_embeddings:
                continue
            m = _EXPERT.match(name)
            if m:
                moe = modules.get(m.group(1))
                if not isinstance(moe, SparseMoE):
                    raise ValueError(f"checkpoint tensor {name!r} does not fit this model")
                moe.load_expert(int(m.group(2)), m.group(3), w)
                loaded.update({f"{m.group(1)}.w13", f"{m.group(1)}.w2"})
                continue
            parts = name.rsplit(".", 2)  # prefix, proj, weight|bias
            if len(parts) == 3 and parts[1] in _STACKED:
                target = f"{parts[0]}.{_STACKED[parts[1]]}"
                mod = modules.get(target)
                if isinstance(mod, MergedLinear):
                    mod.load_shard(parts[1], parts[2], w)
                    loaded.add(f"{target}.{parts[2]}")
                    continue
            if name not in params:
                raise ValueError(f"checkpoint tensor {name!r} does not fit this model")
            owner = modules.get(name.rsplit(".", 1)[0]) if "." in name else None
            if hasattr(owner, "load_full"):  # tensor-parallel module: keeps its rank's slice
                try:
                    owner.load_full(name.rsplit(".", 1)[1], w)
                except ValueError as e:
                    raise ValueError(f"checkpoint tensor {name!r} {e}") from None
                loaded.add(name)
                continue
            p = params[name]
            if p.shape != w.shape:
                raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(w.shape)}, expected {tuple(p.shape)}")
            p.data.copy_(w)
            loaded.add(name)
        missing = sorted(set(params) - loaded - ({"lm_head.weight"} if self.config.tie_word_embeddings else set()))
        if missing:
            raise ValueError(f"checkpoint is missing weights, e.g. {missing[0]!r} ({len(missing)} missing)")


EntryClass = LlamaForCausalLM
