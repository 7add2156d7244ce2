"""Tokenizer and chat template from the model folder (GGUF files are materialized first)."""
from __future__ import annotations

from typing import Any

from sglang.srt.model_loader.gguf_cache import materialize
from sglang.srt.model_loader.locate import ModelFiles


def load_tokenizer(files: ModelFiles, tokenizer_path: str | None = None, chat_template: str | None = None) -> Any:
    from transformers import AutoTokenizer

    path = tokenizer_path or materialize(files).folder
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # missing or broken tokenizer files
        raise ValueError(f"cannot load the tokenizer from {path!r}: {e}") from None
    if chat_template:
        try:
            with open(chat_template) as f:
                tok.chat_template = f.read()
        except OSError as e:
            raise ValueError(f"--chat-template: cannot read {chat_template!r}: {e}") from None
    return tok
