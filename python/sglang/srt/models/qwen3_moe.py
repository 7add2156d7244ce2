"""Qwen3-MoE: Qwen3 attention with sparse expert MLPs on the layers the config marks
(``decoder_sparse_step`` / ``mlp_only_layers``); the routing of each forward is kept on
the MoE modules for attention capture's ``moe_routing``."""
from sglang.srt.models.llama import DecoderSpec, LlamaForCausalLM


class Qwen3MoeForCausalLM(LlamaForCausalLM):
    spec = DecoderSpec(qk_norm=True)


EntryClass = Qwen3MoeForCausalLM
