"""Turn a GGUF file into a cached Hugging Face style folder, once.

Reading a GGUF costs seconds (config and tokenizer conversion by transformers,
dequantization of every tensor by the ``gguf`` package). We do it once per file and keep
the result (config.json, tokenizer files, float32 model.safetensors with Q/K rows already
un-permuted) under ``$SGLANG_CACHE_DIR`` (default ~/.cache/sglang), keyed by the file's
path, size and mtime. Later starts load that folder like any HF checkpoint.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil

from sglang.srt.model_loader.locate import ModelFiles

logger = logging.getLogger(__name__)
CACHE_ROOT = os.path.expanduser(os.environ.get("SGLANG_CACHE_DIR", "~/.cache/sglang"))
_DONE = "CONVERSION_COMPLETE"


def cache_dir_for(path: str) -> str:
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return os.path.join(CACHE_ROOT, "gguf", key)


def materialize(files: ModelFiles) -> ModelFiles:
    """Return an HF-style ModelFiles for a GGUF (converting on first use); HF folders pass through."""
    if files.kind != "gguf":
        return files
    out = cache_dir_for(files.gguf_path)
    if not os.path.isfile(os.path.join(out, _DONE)):
        _convert(files, out)
    return ModelFiles("hf", out, None, files.display_name)


def _convert(files: ModelFiles, out: str) -> None:
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoTokenizer

    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.model_loader.weight_utils import iter_gguf

    logger.info("converting %s once into %s (dequantizing; later starts are fast)", files.gguf_file, out)
    tmp = f"{out}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        try:
            hf = AutoConfig.from_pretrained(files.folder, gguf_file=files.gguf_file)
        except Exception as e:  # transformers raises assorted errors on unknown/broken GGUF metadata
            raise ValueError(f"cannot read GGUF metadata of {files.gguf_file!r}: {e}") from None
        cfg = ModelConfig.from_hf(hf)  # unsupported architectures fail here, before the slow part
        if not getattr(hf, "architectures", None):
            hf.architectures = [cfg.architecture]
        tensors = dict(iter_gguf(files.gguf_path, hf.model_type, cfg.num_heads, cfg.num_kv_heads))
        if cfg.tie_word_embeddings:
            tensors.pop("lm_head.weight", None)
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(tmp, "model.safetensors"))
        hf.save_pretrained(tmp)
        tok = AutoTokenizer.from_pretrained(files.folder, gguf_file=files.gguf_file)
        tok.save_pretrained(tmp)
        open(os.path.join(tmp, _DONE), "w").close()
        os.makedirs(os.path.dirname(out), exist_ok=True)
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished the same conversion first
            if not os.path.isfile(os.path.join(out, _DONE)):
                shutil.rmtree(out, ignore_errors=True)
                os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
