"""Shared pieces of the benchmark scripts: prompts, the transformers baseline, CLI errors."""
from __future__ import annotations

import json
import random
import sys
import time
from typing import Any, Callable

WORDS = ("the of and to in is was for on that with as by at from his her an which are this be had not but "
         "river mountain engine attention model token cache paper system request server memory layer batch").split()


def make_prompts(tokenizer: Any, n: int, min_len: int, max_len: int, seed: int = 0) -> list[list[int]]:
    """n prompts whose token lengths are spread uniformly in [min_len, max_len]."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        target = rng.randint(min_len, max_len)
        ids: list[int] = []
        while len(ids) < target:
            ids += tokenizer.encode(" " + " ".join(rng.choice(WORDS) for _ in range(16)))
        out.append(ids[:target])
    return out


def engine_from_cli(a: Any) -> tuple[Any, Any]:
    """(Scheduler, tokenizer) for a benchmark's parsed command line (ServerArgs' flags, and
    ``--threads``: torch's thread count, 0 = torch's default)."""
    import torch

    from sglang.srt.managers.scheduler import Scheduler
    from sglang.srt.model_loader.tokenizer import load_tokenizer
    from sglang.srt.server_args import ServerArgs

    if a.threads:
        torch.set_num_threads(a.threads)
    args = ServerArgs.from_cli_args(a)
    args.validate()
    sched = Scheduler(args)
    return sched, load_tokenizer(sched.runner.files)


def hf_model(model_folder: str, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_folder, dtype=dtype)
    return m.eval()


def hf_generate_time(model: Any, prompts: list[list[int]], max_new_tokens: int, pad_id: int) -> float:
    """Seconds for one transformers greedy generate over the batch (left padded), exactly
    max_new_tokens new tokens per prompt."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    t = time.perf_counter()
    with torch.no_grad():
        model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                       do_sample=False, pad_token_id=pad_id)
    return time.perf_counter() - t


def start_server(flags: list[str] | None = None, timeout: float = 600) -> tuple[str, Any]:
    """A ``python -m sglang.launch_server`` on a free port (bundled model unless flags say
    otherwise), once it answers /health: (url, process)."""
    import subprocess

    import httpx

    from sglang.srt.utils.network import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "sglang.launch_server", "--port", str(port), "--log-level",
                             "error", *(flags or [])])
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("the server did not start")
        time.sleep(0.5)


def against_server(url: str | None, run: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """``run(url)`` against the server at ``url``, or against one started here (and
    stopped afterwards) when ``url`` is None."""
    proc = None
    if url is None:
        url, proc = start_server()
    try:
        return run(url)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)


def run_cli(main: Callable[[], dict[str, Any]]) -> None:
    """Run a benchmark main; bad input gives one line on stderr and exit code 2."""
    try:
        result = main()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))
