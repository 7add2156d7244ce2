"""Qwen2 / Qwen2.5: the Llama decoder with bias on the q, k and v projections."""
from sglang.srt.models.llama import DecoderSpec, LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    spec = DecoderSpec(qkv_bias=True)


EntryClass = Qwen2ForCausalLM
