"""Iterate checkpoint tensors under Hugging Face names, from safetensors or GGUF."""
from __future__ import annotations

import glob
import os
import re
from typing import Iterator

import numpy as np
import torch

# GGUF tensor names -> HF names (llama.cpp's convention for llama/qwen2/qwen3/qwen3moe).
_GGUF_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GGUF_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate",
}
_GGUF_EXPERTS = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}
_BLK = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")


def iter_safetensors(folder: str) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise ValueError(f"no *.safetensors weight files in {folder!r}")
    for path in files:
        try:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise ValueError(f"corrupt weight file {os.path.basename(path)!r}: {e}") from None


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (it interleaves the two rotary halves)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def iter_gguf(path: str, arch: str, num_heads: int, num_kv_heads: int) -> Iterator[tuple[str, torch.Tensor]]:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the reader raises plain ValueError/struct errors on damaged files
        raise ValueError(f"cannot read GGUF file {os.path.basename(path)!r}: {e}") from None
    permuted = arch in ("llama", "mistral")  # llama.cpp permutes Q/K only for these
    for t in reader.tensors:
        try:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise ValueError(f"GGUF tensor {t.name!r} uses quantization {t.tensor_type.name}, which this loader "
                             "cannot dequantize") from None
        w = np.asarray(data, dtype=np.float32)
        if t.name in _GGUF_TOP:
            yield _GGUF_TOP[t.name], torch.from_numpy(w.copy())
            continue
        m = _BLK.match(t.name)
        if not m:
            raise ValueError(f"unknown GGUF tensor {t.name!r}")
        layer, kind, suffix = m.groups()
        prefix = f"model.layers.{layer}"
        if kind in _GGUF_EXPERTS:
            for e in range(w.shape[0]):  # stacked [E, out, in]
                yield f"{prefix}.mlp.experts.{e}.{_GGUF_EXPERTS[kind]}.weight", torch.from_numpy(w[e].copy())
            continue
        if kind not in _GGUF_BLOCK:
            raise ValueError(f"unknown GGUF tensor {t.name!r}")
        if permuted and kind == "attn_q":
            w = _unpermute(w, num_heads)
        elif permuted and kind == "attn_k":
            w = _unpermute(w, num_kv_heads)
        yield f"{prefix}.{_GGUF_BLOCK[kind]}.{suffix}", torch.from_numpy(w.copy())
