"""Model configuration: the few numbers the engine needs, read from an HF config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# HF architecture name -> our model module (python/sglang/srt/models/<module>.py)
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
}

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
}


def resolve_dtype(dtype: str, hf_dtype: Any, device: torch.device) -> torch.dtype:
    """auto: float32 on CPU (exact and fast enough there), the checkpoint's dtype on GPU."""
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        if isinstance(hf_dtype, str):
            hf_dtype = _DTYPES.get(hf_dtype.replace("torch.", ""), torch.bfloat16)
        return hf_dtype if hf_dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


@dataclass
class ModelConfig:
    architecture: str
    hf_config: Any
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    context_length: int
    tie_word_embeddings: bool
    attention_bias: bool = False
    # MoE (Qwen3-MoE)
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    moe_layers: list[int] = field(default_factory=list)
    eos_token_ids: list[int] = field(default_factory=list)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def module_name(self) -> str:
        return SUPPORTED_ARCHITECTURES[self.architecture]

    @classmethod
    def from_hf(cls, hf: Any, context_length: int | None = None) -> "ModelConfig":
        archs = list(getattr(hf, "architectures", None) or [])
        if not archs:  # configs converted from GGUF carry only model_type
            archs = [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                      "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}.get(hf.model_type, hf.model_type)]
        arch = archs[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"unsupported model architecture {arch!r}; supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}")
        if getattr(hf, "sliding_window", None) and getattr(hf, "use_sliding_window", arch == "MistralForCausalLM"):
            raise ValueError(f"{arch} with sliding-window attention is not supported")
        rope = dict(getattr(hf, "rope_parameters", None) or {})
        rope_scaling = getattr(hf, "rope_scaling", None) or None
        rope_theta = float(rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0)))
        if rope and rope.get("rope_type", "default") != "default":
            rope_scaling = rope
        if rope_scaling is not None:
            kind = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
            if kind == "default":
                rope_scaling = None
            elif kind not in ("llama3", "linear"):
                raise ValueError(f"rope scaling type {kind!r} is not supported (supported: llama3, linear)")
        num_heads = hf.num_attention_heads
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // num_heads
        ctx = int(getattr(hf, "max_position_embeddings", 4096))
        eos = getattr(hf, "eos_token_id", None)
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        num_experts = int(getattr(hf, "num_experts", 0) or 0)
        layers = hf.num_hidden_layers
        moe_layers: list[int] = []
        if num_experts:
            step = int(getattr(hf, "decoder_sparse_step", 1) or 1)
            dense = set(getattr(hf, "mlp_only_layers", []) or [])
            moe_layers = [i for i in range(layers) if i not in dense and (i + 1) % step == 0]
        return cls(
            architecture=arch,
            hf_config=hf,
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            num_layers=layers,
            num_heads=num_heads,
            num_kv_heads=getattr(hf, "num_key_value_heads", None) or num_heads,
            head_dim=head_dim,
            intermediate_size=getattr(hf, "intermediate_size", 0),
            rms_norm_eps=float(hf.rms_norm_eps),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            context_length=context_length or ctx,
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            attention_bias=bool(getattr(hf, "attention_bias", arch == "Qwen2ForCausalLM")),
            num_experts=num_experts,
            num_experts_per_tok=int(getattr(hf, "num_experts_per_tok", 0) or 0),
            moe_intermediate_size=int(getattr(hf, "moe_intermediate_size", 0) or 0),
            norm_topk_prob=bool(getattr(hf, "norm_topk_prob", True)),
            moe_layers=moe_layers,
            eos_token_ids=eos_ids,
        )
