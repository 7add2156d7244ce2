"""Build a model from its files: config, architecture class, weights, dtype, device."""
from __future__ import annotations

import importlib
import json
import os
from typing import Any

import torch

from sglang.srt.configs.model_config import ModelConfig
from sglang.srt.model_loader.locate import ModelFiles
from sglang.srt.model_loader.weight_utils import iter_gguf, iter_safetensors


def load_hf_config(files: ModelFiles) -> Any:
    from transformers import AutoConfig

    try:
        if files.kind == "gguf":
            return AutoConfig.from_pretrained(files.folder, gguf_file=files.gguf_file)
        with open(os.path.join(files.folder, "config.json")) as f:
            json.load(f)  # a clear error for a broken file before transformers' own
        return AutoConfig.from_pretrained(files.folder)
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"cannot read the model config of {files.display_name!r}: {e}") from None
    except ValueError as e:
        raise ValueError(f"cannot read the model config of {files.display_name!r}: {e}") from None


def load_model(files: ModelFiles, cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    module = importlib.import_module(f"sglang.srt.models.{cfg.module_name}")
    with torch.device("meta"):
        model = module.EntryClass(cfg)
    # Materialize on the target device in float32 (GGUF dequantizes to float32), then cast.
    model = model.to_empty(device=device)
    for mod in model.modules():  # buffers (rotary caches) were on meta: rebuild them
        if hasattr(mod, "cos_cache"):
            fresh = type(mod)(mod.head_dim, cfg.context_length, cfg.rope_theta, cfg.rope_scaling)
            mod.cos_cache, mod.sin_cache = fresh.cos_cache.to(device), fresh.sin_cache.to(device)
    if files.kind == "gguf":
        weights = iter_gguf(files.gguf_path, cfg.hf_config.model_type, cfg.num_heads, cfg.num_kv_heads)
    else:
        weights = iter_safetensors(files.folder)
    # GGUF files normally arrive here already materialized as a cached HF folder (gguf_cache.py).
    model.load_weights(weights)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.to(dtype).eval()
