"""Run capturing requests through an in-process Scheduler, and the dense oracle."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sglang.srt.capture.entries import build_entries
from sglang.srt.capture.hook import maybe_install_capture
from sglang.srt.managers.io_struct import CaptureParams, TokenizedGenerateReqInput
from sglang.srt.managers.scheduler import Scheduler
from sglang.srt.sampling.sampling_params import SamplingParams
from sglang.srt.server_args import ServerArgs


def capture_scheduler(model_path: str | None = None, **kw: Any) -> Scheduler:
    from sglang.srt.model_executor.model_runner import ModelRunner
    from sglang.srt.model_loader.tokenizer import load_tokenizer

    args = ServerArgs(model_path=model_path, return_attention_tokens=True, **kw)
    runner = ModelRunner(args)
    # with its tokenizer, as in the server: stop strings and grammars need it
    sched = Scheduler(args, runner, load_tokenizer(runner.files))
    maybe_install_capture(sched)
    assert sched.capture_hook is not None
    return sched


def run_capture(sched: Scheduler, reqs: list[tuple[Any, ...]],
                n_new: int) -> dict[str, dict[str, Any]]:
    """reqs: (arrival step, rid, prompt ids, capture params[, sampling params[, group]]).
    Returns rid -> output ids + entries."""
    res: dict[str, dict[str, Any]] = {}
    pending = sorted(reqs, key=lambda r: r[0])
    prompt_len = {}
    step = 0
    while pending or sched.has_work() or sched.finished_outputs:
        while pending and pending[0][0] <= step:
            _, rid, ids, cap, *extra = pending.pop(0)  # extra: (SamplingParams, group) to override
            res[rid] = {"output_ids": [], "entries": [], "payloads": 0, "error": None, "lens": []}
            prompt_len[rid] = len(ids)
            sp = extra[0] if extra else SamplingParams(max_new_tokens=n_new, temperature=0.0, ignore_eos=True)
            group = extra[1] if len(extra) > 1 else None
            sched.add_request(TokenizedGenerateReqInput(rid, ids, sp, stream=True, capture=cap, group=group))
        for o in (sched.step() if sched.has_work() else sched.step_idle()):
            r = res[o.rid]
            r["output_ids"] += o.new_token_ids
            r["error"] = r["error"] or o.error
            r["lens"] += o.logit_lens or []
            if o.capture:
                r["entries"] += build_entries(o.capture, prompt_len[o.rid])
                r["payloads"] += 1
        step += 1
    return res


def dense_attention(hf_model: Any, ids: list[int]) -> list[np.ndarray]:
    """Per layer [H, T, T] float64 attention probabilities from transformers (eager)."""
    with torch.no_grad():
        out = hf_model(torch.tensor([ids]), output_attentions=True)
    return [a[0].double().numpy() for a in out.attentions]


def hist16(p: np.ndarray, t: int) -> np.ndarray:
    """Exact 16-bin log-distance histogram of p over keys 0..t (independent of the kernel)."""
    h = np.zeros(16)
    for j in range(t + 1):
        d = t - j
        b = 0 if d <= 1 else min(int(np.floor(np.log2(d))), 15)
        h[b] += p[j]
    return h


def assert_entries_close(got: Any, want: Any, atol: float = 0.0, where: str = "entries") -> None:
    """Capture entries (nested dicts and lists) equal: ints and strings exactly, floats
    within atol (0: bit for bit)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: keys {got!r} != {want!r}"
        for k in want:
            assert_entries_close(got[k], want[k], atol, f"{where}.{k}")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_entries_close(g, w, atol, f"{where}[{i}]")
    elif isinstance(want, float):
        assert abs(got - want) <= atol, f"{where}: {got} != {want} (atol {atol})"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"
