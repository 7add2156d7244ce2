"""Dense replay (Scheduler.replay) against transformers' eager attention
(output_attentions=True) for the default SmolLM2, beside a running request."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sched_utils import make_scheduler
from sglang.srt.managers.io_struct import ReplayReq, TokenizedGenerateReqInput
from sglang.srt.sampling.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def sched(smollm_tokenizer):
    return make_scheduler(None, smollm_tokenizer, max_total_tokens=4096)


@pytest.fixture(scope="module")
def dense(sched, smollm_tokenizer):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(sched.runner.files.folder, dtype=torch.float32,
                                              attn_implementation="eager").eval()
    ids = smollm_tokenizer.encode("<|im_start|>user\nWhy is the sky blue? Explain briefly.<|im_end|>\n")
    with torch.no_grad():
        att = hf(torch.tensor([ids]), output_attentions=True).attentions
    return ids, [a[0].double().numpy() for a in att]  # per layer [H, T, T]


def test_replay_matches_eager_attention(sched, dense):
    ids, ref = dense
    out = sched.replay(ReplayReq("r", ids, [0, 13, 29], None, False))
    assert out.error is None and out.probs.dtype == np.float16 and out.probs.shape == (3, 9, len(ids), len(ids))
    for i, layer in enumerate((0, 13, 29)):
        np.testing.assert_allclose(out.probs[i].astype(np.float64), ref[layer], atol=2e-3)
    mean = sched.replay(ReplayReq("m", ids, [29], [1, 4], True, mask_prefix=3))
    want = ref[29][[1, 4]].mean(0)
    want[:3] = 0
    want[:, :3] = 0
    assert mean.probs.shape == (1, 1, len(ids), len(ids))
    np.testing.assert_allclose(mean.probs[0, 0].astype(np.float64), want, atol=2e-3)


def test_replay_leaves_running_requests_and_the_pool_alone(sched, dense, smollm_tokenizer):
    ids, _ = dense
    prompt = smollm_tokenizer.encode("Once upon a time")
    p = SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)

    def run(replay_at: int | None) -> list[int]:
        sched.add_request(TokenizedGenerateReqInput("g", prompt, p, True))
        got, step = [], 0
        while sched.has_work():
            if step == replay_at:
                assert sched.replay(ReplayReq("x", ids, [5], None, True)).error is None
            got += [t for o in sched.step() for t in o.new_token_ids]
            step += 1
        return got

    assert run(3) == run(None)
    free = sched.allocator.available() + sched.tree.evictable_size
    assert free == sched.allocator.size and sched.req_to_token.available() == sched.req_to_token.size
    bad = sched.replay(ReplayReq("b", [10 ** 6], [0], None, True))
    assert bad.error and bad.error.startswith("input_ids")
