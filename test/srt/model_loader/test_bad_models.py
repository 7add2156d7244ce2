"""Bad model input gets one clear error naming the problem, from the API (ValueError)
and the CLI (exit code 2), and nothing is left running."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sglang.srt.configs.model_config import ModelConfig
from sglang.srt.model_executor.model_runner import ModelRunner
from sglang.srt.server_args import ServerArgs


def _runner(path: str, **kw) -> ModelRunner:
    return ModelRunner(ServerArgs(model_path=path, max_total_tokens=64, **kw))


def test_unsupported_architecture(tmp_path, tiny_models):
    d = tmp_path / "gpt"
    shutil.copytree(tiny_models["llama"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["GPT2LMHeadModel"], "gpt2"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported model architecture 'GPT2LMHeadModel'"):
        _runner(str(d))


def test_missing_and_corrupt_weights(tmp_path, tiny_models):
    d = tmp_path / "noweights"
    shutil.copytree(tiny_models["llama"], d)
    for f in d.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ValueError, match="no \\*.safetensors weight files"):
        _runner(str(d))
    d2 = tmp_path / "corrupt"
    shutil.copytree(tiny_models["llama"], d2)
    for f in d2.glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt weight file"):
        _runner(str(d2))
    with pytest.raises(ValueError, match="does not exist"):
        _runner(str(tmp_path / "nowhere"))


def test_unknown_dtype():
    with pytest.raises(ValueError, match="unknown dtype"):
        ServerArgs(dtype="float8").validate()


def _write_gguf(path: str, qtype) -> None:
    import gguf

    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    toks = [f"t{i}" for i in range(64)]
    w.add_token_list(toks)
    w.add_token_types([1] * 64)
    w.add_token_merges([])
    block, nbytes = gguf.constants.GGML_QUANT_SIZES[qtype]
    w.add_tensor("token_embd.weight", np.zeros((64, 32 // block * nbytes), dtype=np.uint8), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_of_unknown_quantization(tmp_path):
    import gguf

    p = str(tmp_path / "odd.gguf")
    # Q8_1 is a real ggml type that the gguf package cannot dequantize
    _write_gguf(p, gguf.GGMLQuantizationType.Q8_1)
    from sglang.srt.model_loader.weight_utils import iter_gguf

    with pytest.raises(ValueError, match="quantization Q8_1"):
        list(iter_gguf(p, "llama", 4, 2))


def test_truncated_gguf(tmp_path):
    from sglang.srt.model_loader.locate import default_model_path

    p = tmp_path / "broken.gguf"
    with open(default_model_path(), "rb") as f:
        p.write_bytes(f.read(4096))
    with pytest.raises(ValueError):
        _runner(str(p))


def test_cli_exits_2_with_one_clear_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sglang.bench_one_batch", "--model-path", str(tmp_path / "nope"),
                        "--batch-size", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_model_config_reads_rope_scaling(tiny_models):
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(tiny_models["llama"])
    hf.rope_parameters = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    with pytest.raises(ValueError, match="rope scaling type 'yarn'"):
        ModelConfig.from_hf(hf)
