"""Tiny random-weight models of each supported architecture, written to folders and
loaded through the engine's real loader (config.json + safetensors + tokenizer).

The tokenizer is SmolLM2's (from the bundled default model), so prompts are real text.
Weights use a large init scale so the logits are far from ties: greedy decoding must then
agree token for token with transformers whatever the float rounding order.
"""
from __future__ import annotations

import os
from typing import Any

import torch

ARCHS = ("llama", "qwen2", "qwen3", "qwen3_moe")


def _config(arch: str, vocab: int) -> Any:
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig

    common = dict(vocab_size=vocab, hidden_size=96, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=1024,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.3,
                  bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        return LlamaConfig(**common, rope_theta=10000.0)
    if arch == "qwen2":
        return Qwen2Config(**common, rope_theta=1000000.0)
    if arch == "qwen3":
        return Qwen3Config(**common, head_dim=16, rope_theta=1000000.0)
    if arch == "qwen3_moe":
        return Qwen3MoeConfig(**common, head_dim=16, num_experts=8, num_experts_per_tok=2,
                              moe_intermediate_size=48, decoder_sparse_step=1, mlp_only_layers=[0],
                              norm_topk_prob=True)
    raise ValueError(arch)


def make_tiny_model(arch: str, folder: str, tokenizer: Any, seed: int = 0) -> str:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = _config(arch, len(tokenizer))
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():  # norms at 1 make every layer matter; keep the random scale sane
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3 if "embed" in name or "lm_head" in name else 1.0 / p.shape[-1] ** 0.5)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def hf_greedy(folder: str, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """transformers' greedy generate, one prompt at a time (no padding effects)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    outs = []
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids])
            y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
            outs.append(y[0, len(ids):].tolist())
    return outs


def cache_key(*parts: Any) -> str:
    return "-".join(str(p) for p in parts)


def exists(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json"))
