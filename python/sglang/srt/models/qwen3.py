"""Qwen3: the Llama decoder with per-head RMSNorm on q and k before RoPE."""
from sglang.srt.models.llama import DecoderSpec, LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    spec = DecoderSpec(qk_norm=True)


EntryClass = Qwen3ForCausalLM
