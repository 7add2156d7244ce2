"""Drive a Scheduler in-process, step by step (deterministic arrival times)."""
from __future__ import annotations

from typing import Any

from sglang.srt.managers.io_struct import ReqOutput, TokenizedGenerateReqInput
from sglang.srt.managers.scheduler import Scheduler
from sglang.srt.sampling.sampling_params import SamplingParams
from sglang.srt.server_args import ServerArgs


def make_scheduler(model_path: str, tokenizer: Any = None, **kw: Any) -> Scheduler:
    return Scheduler(ServerArgs(model_path=model_path, **kw), tokenizer=tokenizer)


def greedy(n: int, **kw: Any) -> SamplingParams:
    kw.setdefault("ignore_eos", True)
    return SamplingParams(max_new_tokens=n, temperature=0.0, **kw)


def run(sched: Scheduler, arrivals: list[tuple[int, str, list[int], SamplingParams]],
        max_steps: int = 10_000) -> dict[str, dict[str, Any]]:
    """arrivals: (step at which to add, rid, input_ids, params). Returns rid -> result."""
    results: dict[str, dict[str, Any]] = {}
    pending = sorted(arrivals, key=lambda a: a[0])
    step = 0
    while (pending or sched.has_work() or sched.finished_outputs) and step < max_steps:
        while pending and pending[0][0] <= step:
            _, rid, ids, params = pending.pop(0)
            results[rid] = {"output_ids": [], "finish": None, "error": None, "status": None, "cached": 0}
            sched.add_request(TokenizedGenerateReqInput(rid, ids, params, stream=True))
        outs: list[ReqOutput] = sched.step() if sched.has_work() else sched.step_idle()
        for o in outs:
            r = results[o.rid]
            r["output_ids"] += o.new_token_ids
            r["cached"] = o.cached_tokens
            if o.finished_reason is not None:
                r["finish"], r["error"] = o.finished_reason, o.error
                r["status"] = o.error_status if o.error else None
        step += 1
    assert not pending and not sched.has_work(), "scheduler did not finish in time"
    return results


def assert_pool_free(sched: Scheduler) -> None:
    """Every KV slot is free or held only by the (evictable) radix cache, and every
    req_to_token row is free; after a flush the pool is entirely free."""
    tree = sched.tree
    evictable = tree.evictable_size if tree else 0
    assert (tree.protected_size if tree else 0) == 0
    assert sched.allocator.available() + evictable == sched.allocator.size
    assert sched.req_to_token.available() == sched.req_to_token.size
    assert sched.flush_cache()
    assert sched.allocator.available() == sched.allocator.size
    assert sorted(sched.allocator.free_slots.tolist()) == list(range(1, sched.allocator.size + 1))
