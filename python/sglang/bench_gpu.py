"""One-command GPU benchmark: random-weight models with real architectures, no downloads.

    python -m sglang.bench_gpu                       # every preset that fits, JSON on stdout
    python -m sglang.bench_gpu --models qwen2.5-0.5b --batch-sizes 1,8,32,64 --out gpu.json

For each model (weights written once as safetensors under --workdir, random but with the
real shapes, so speed is the real model's) it measures, in-process through the engine's
Scheduler:

* decode throughput at each batch size (steady-state decode tokens/s and end-to-end
  tokens/s including the prefill), and transformers ``generate`` on the same prompts as
  the baseline (end-to-end, same dtype, SDPA attention);
* offline throughput: many requests of mixed lengths submitted at once;
* capture overhead at one batch size: off (CUDA graphs), off without graphs, fingerprint
  and raw top-32 (capturing batches always run eagerly);
* the batch-1 memory-bandwidth roofline: bytes one decode step must read (weights + KV)
  over the step time, against the GPU's spec bandwidth and a measured device copy.

Everything goes to stdout as one JSON document; progress goes to stderr. It also runs on
CPU with the ``tiny`` preset (used by the tests), where the numbers mean little.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

logger = logging.getLogger("bench_gpu")

# Architectures as published (config.json of each checkpoint); weights are random.
PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(arch="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(arch="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True),
    "smollm2-1.7b": dict(arch="llama", vocab_size=49152, hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                         max_position_embeddings=8192, rope_theta=130000.0, tie_word_embeddings=True),
    "qwen2.5-7b": dict(arch="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=False),
    # for tests and CPU smoke runs only
    "tiny": dict(arch="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                 rope_theta=10000.0, tie_word_embeddings=True),
}
DEFAULT_MODELS = "smollm2-135m,qwen2.5-0.5b,qwen2.5-7b"

# Peak HBM bandwidth (bytes/s) by device-name substring, from the vendors' data sheets.
SPEC_BANDWIDTH = [
    ("H200", 4.8e12), ("H100 SXM", 3.35e12), ("H100 80GB HBM3", 3.35e12), ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("A100-SXM4-80GB", 2.039e12), ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12), ("L40S", 0.864e12), ("L40", 0.864e12), ("L4", 0.3e12), ("A10G", 0.6e12), ("A10", 0.6e12),
    ("RTX 4090", 1.008e12), ("RTX 3090", 0.936e12), ("V100", 0.9e12), ("T4", 0.32e12),
]


def log(msg: str) -> None:
    print(f"[bench_gpu] {msg}", file=sys.stderr, flush=True)


def spec_bandwidth(name: str) -> float | None:
    for key, bw in SPEC_BANDWIDTH:
        if key.lower() in name.lower():
            return bw
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, iters: int = 5) -> float:
    """Bytes moved per second by a large device-to-device copy (read + write)."""
    if device.type != "cuda":
        nbytes = min(nbytes, 64 << 20)
    a = torch.empty(nbytes // 2, dtype=torch.float16, device=device).fill_(1.0)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        b.copy_(a)
    sync(device)
    dt = time.perf_counter() - t0
    return 2 * nbytes * iters / dt


# ---------------------------------------------------------------------------- model files
def hf_config(name: str) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    spec = dict(PRESETS[name])
    arch = spec.pop("arch")
    common = dict(rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=1)
    if arch == "qwen2":
        return Qwen2Config(**spec, **common, use_sliding_window=False)
    return LlamaConfig(**spec, **common)


def write_random_model(name: str, workdir: str, seed: int = 0, shard_bytes: int = 2 << 30,
                       device: torch.device | str = "cpu") -> str:
    """config.json + random bfloat16 safetensors shards with the architecture's real names and
    shapes (taken from transformers on the meta device). Reused when already written. The
    numbers are drawn on ``device`` (a 7B model's 7.6e9 normals take minutes on one CPU core)."""
    from safetensors.torch import save_file
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    folder = os.path.join(workdir, name)
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    os.makedirs(folder, exist_ok=True)
    cfg = hf_config(name)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(cfg)
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    if cfg.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    gen = torch.Generator(device=device).manual_seed(seed)
    shard: dict[str, torch.Tensor] = {}
    size, index, n = 0, {}, 0

    def flush() -> None:
        nonlocal shard, size, n
        if shard:
            fname = f"model-{n:05d}.safetensors"
            save_file(shard, os.path.join(folder, fname), metadata={"format": "pt"})
            index.update({k: fname for k in shard})
            shard, size, n = {}, 0, n + 1

    for key, shape in tqdm(shapes.items(), desc=f"writing {name}", file=sys.stderr, leave=False):
        if len(shape) == 1:  # norms at 1, biases at 0: keep activations in a sane range
            t = torch.ones(shape) if "norm" in key else torch.zeros(shape)
        else:
            t = torch.randn(shape, generator=gen, device=device).mul_(0.02)
        shard[key] = t.to(torch.bfloat16).cpu()
        size += shard[key].numel() * 2
        if size >= shard_bytes:
            flush()
    flush()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": index}, f)
    cfg.save_pretrained(folder)
    open(done, "w").close()
    return folder


# ---------------------------------------------------------------------------- engine runs
@dataclass
class RunResult:
    requests: int
    output_tokens: int
    prompt_tokens: int
    total_s: float
    decode_tokens: int = 0
    decode_s: float = 0.0
    decode_steps: int = 0
    graph_replays: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def run_engine(sched: Any, prompts: list[list[int]], new_tokens: list[int],
               capture: Callable[[int], Any] | None = None) -> RunResult:
    """Submit every request at once, step until done. Decode steps that run after every
    request was admitted and prefilled are timed separately (steady-state decode)."""
    from sglang.srt.managers.io_struct import TokenizedGenerateReqInput
    from sglang.srt.sampling.sampling_params import SamplingParams

    dev = sched.device
    gr = sched.runner.graph_runner
    replays0 = gr.replays if gr is not None else 0
    cap0 = gr.capture_replays if gr is not None else 0
    sync(dev)
    t0 = time.perf_counter()
    for i, (p, n) in enumerate(zip(prompts, new_tokens)):
        sp = SamplingParams(max_new_tokens=n, temperature=0.0, ignore_eos=True)
        sched.add_request(TokenizedGenerateReqInput(f"b{i}", p, sp, stream=False,
                                                    capture=capture(i) if capture else None))
    out_tokens = 0
    decode_s, decode_tokens, steps = 0.0, 0, 0
    while sched.has_work():
        steady = not sched.waiting and sched.chunked is None and sched.running
        if steady:
            sync(dev)
            ts = time.perf_counter()
            n_run = len(sched.running)
        outs = sched.step()
        if steady:
            sync(dev)
            decode_s += time.perf_counter() - ts
            decode_tokens += n_run
            steps += 1
        for o in outs:
            if o.error:
                raise RuntimeError(f"request {o.rid} failed: {o.error}")
            out_tokens += len(o.new_token_ids)
    sync(dev)
    total = time.perf_counter() - t0
    return RunResult(len(prompts), out_tokens, sum(map(len, prompts)), total, decode_tokens, decode_s, steps,
                     (gr.replays - replays0) if gr is not None else 0,
                     {"capture_graph_replays": (gr.capture_replays - cap0) if gr is not None else 0})


def random_prompts(n: int, length: int, vocab: int, rng: random.Random) -> list[list[int]]:
    return [[rng.randrange(2, vocab) for _ in range(length)] for _ in range(n)]


def hf_load(folder: str, dtype: torch.dtype, device: torch.device) -> Any:
    from transformers import AutoModelForCausalLM

    kw: dict[str, Any] = {"device_map": str(device)} if device.type == "cuda" else {}
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa", **kw)
    return model.to(device).eval()


def hf_generate(model: Any, prompts: list[list[int]], new_tokens: int, device: torch.device) -> dict[str, float]:
    """transformers generate, greedy, batch = all prompts (equal lengths: no padding)."""
    x = torch.tensor(prompts, device=device)
    kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        w = x[:1]
        model.generate(w, attention_mask=torch.ones_like(w), max_new_tokens=2, min_new_tokens=2, **kw)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, **kw)
        sync(device)
    dt = time.perf_counter() - t0
    gen = (y.shape[1] - x.shape[1]) * x.shape[0]
    return {"tokens_per_s": gen / dt, "seconds": dt, "output_tokens": gen}


def weight_bytes_per_step(model: torch.nn.Module, tied: bool) -> int:
    """Bytes of weights a decode step reads: every parameter once (shared tensors once),
    except an untied input embedding, of which a step reads only a few rows."""
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        if name.endswith("embed_tokens.weight") and not tied:
            continue
        total += p.numel() * p.element_size()
    return total


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from tqdm import tqdm

    from sglang.srt.capture.hook import maybe_install_capture
    from sglang.srt.managers.io_struct import CaptureParams, auto_layers
    from sglang.srt.managers.scheduler import Scheduler
    from sglang.srt.model_executor.cuda_graph_runner import graph_status
    from sglang.srt.server_args import ServerArgs

    folder = write_random_model(name, args.workdir, device=device)
    preset = PRESETS[name]
    rng = random.Random(args.seed)
    vocab = preset["vocab_size"]
    P, N = args.prompt_len, args.decode_len
    batch_sizes = args.batch_sizes
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    res: dict[str, Any] = {"config": {k: v for k, v in preset.items()}, "prompt_len": P, "decode_len": N}

    # transformers baseline first, alone in memory
    if not args.skip_hf:
        res["transformers"] = {}
        hf = hf_load(folder, dtype, device)
        for bs in tqdm(batch_sizes, desc=f"{name}: transformers", file=sys.stderr, leave=False):
            prompts = random_prompts(bs, P, vocab, random.Random(args.seed + bs))
            res["transformers"][str(bs)] = hf_generate(hf, prompts, N, device)
        del hf
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    max_bs = max(batch_sizes + [args.offline_concurrency, args.capture_batch])
    offline_max = args.offline_requests and int(P * 2 + N)
    tokens = max(max_bs * (P + N + 16), args.offline_concurrency * (offline_max + 16)) + 256
    sargs = ServerArgs(model_path=folder, dtype=args.dtype, device=str(device), max_running_requests=max_bs,
                       max_total_tokens=tokens, chunked_prefill_size=args.chunked_prefill_size,
                       attention_backend=args.attention_backend, disable_cuda_graph=args.disable_cuda_graph,
                       return_attention_tokens=True, context_length=max(P * 2 + N + 64, 512),
                       log_level="warning")
    t0 = time.perf_counter()
    sched = Scheduler(sargs)
    maybe_install_capture(sched)  # requests without capture fields pay nothing
    runner = sched.runner
    res["engine"] = {"attention_backend": runner.attention_backend_name, "dtype": str(runner.dtype),
                     **graph_status(runner.graph_runner), "startup_s": time.perf_counter() - t0,
                     "graph_batch_sizes": runner.graph_runner.batch_sizes if runner.graph_runner else []}
    run_engine(sched, random_prompts(2, P, vocab, rng), [4, 4])  # warm-up: kernels compile

    decode: dict[str, Any] = {}
    for bs in tqdm(batch_sizes, desc=f"{name}: engine decode", file=sys.stderr, leave=False):
        prompts = random_prompts(bs, P, vocab, random.Random(args.seed + bs))
        r = run_engine(sched, prompts, [N] * bs)
        d = {"decode_tokens_per_s": r.decode_tokens / r.decode_s if r.decode_s else None,
             "e2e_tokens_per_s": r.output_tokens / r.total_s, "e2e_s": r.total_s,
             "ms_per_decode_step": 1e3 * r.decode_s / r.decode_steps if r.decode_steps else None,
             "graph_replays": r.graph_replays}
        hf = res.get("transformers", {}).get(str(bs))
        if hf:
            d["speedup_vs_transformers"] = d["e2e_tokens_per_s"] / hf["tokens_per_s"]
        decode[str(bs)] = d
    res["decode"] = decode

    if args.offline_requests:
        n = args.offline_requests
        prompts = [[rng.randrange(2, vocab) for _ in range(rng.randint(P // 2, 2 * P))] for _ in range(n)]
        outs = [rng.randint(max(1, N // 2), N) for _ in range(n)]
        sched.args.max_running_requests = args.offline_concurrency
        r = run_engine(sched, prompts, outs)
        sched.args.max_running_requests = max_bs
        res["offline"] = {"requests": n, "concurrency": args.offline_concurrency, "seconds": r.total_s,
                          "output_tokens_per_s": r.output_tokens / r.total_s,
                          "total_tokens_per_s": (r.output_tokens + r.prompt_tokens) / r.total_s,
                          "requests_per_s": n / r.total_s}

    # capture overhead at one batch size
    cb = args.capture_batch
    prompts = random_prompts(cb, P, vocab, random.Random(args.seed + 999))
    modes: dict[str, Any] = {}
    L = runner.model_config.num_layers
    auto = auto_layers(L)
    variants: list[tuple[str, Callable[[int], Any] | None, bool]] = [
        ("off", None, True), ("off_eager", None, False),
        ("fingerprint", lambda i: CaptureParams(mode="fingerprint", layers=[L - 1]), True),
        ("fingerprint_auto", lambda i: CaptureParams(mode="fingerprint", layers=auto), True),
        ("sketch_auto", lambda i: CaptureParams(mode="sketch", top_k=5, layers=auto), True),
        ("raw_top32", lambda i: CaptureParams(mode="raw", top_k=32, layers=[L - 1]), True),
        ("raw_top32_auto", lambda i: CaptureParams(mode="raw", top_k=32, layers=auto), True),
        # half the batch captures: the other half rides along in the same capture-graph replays
        ("mixed_half_raw_top32_auto", lambda i: CaptureParams(mode="raw", top_k=32, layers=auto) if i % 2 else None,
         True),
    ]
    gr = runner.graph_runner
    runs = [v for _ in range(args.capture_repeats) for v in variants]  # interleaved: drift hits every mode alike
    for label, cap, graphs in tqdm(runs, desc=f"{name}: capture", file=sys.stderr, leave=False):
        runner.graph_runner = gr if graphs else None
        r = run_engine(sched, prompts, [N] * cb, cap)
        tps = r.decode_tokens / r.decode_s if r.decode_s else None
        if label in modes and (tps or 0) <= (modes[label]["decode_tokens_per_s"] or 0):
            continue  # keep each mode's best run
        modes[label] = {"decode_tokens_per_s": tps,
                        "e2e_tokens_per_s": r.output_tokens / r.total_s, "graph_replays": r.graph_replays,
                        "capture_graph_replays": r.extra["capture_graph_replays"]}
    runner.graph_runner = gr
    base = modes["off"]["decode_tokens_per_s"]
    for label in modes:
        v = modes[label]["decode_tokens_per_s"]
        modes[label]["overhead_vs_off"] = (base / v - 1.0) if base and v else None
    res["capture"] = {"batch_size": cb, "modes": modes}

    # batch-1 roofline: what one decode step must read, over how long it took
    if "1" in decode and decode["1"]["ms_per_decode_step"]:
        cfg = runner.model_config
        kv_elem = torch.tensor([], dtype=runner.dtype).element_size()
        avg_ctx = P + N / 2
        kv_bytes = 2 * cfg.num_layers * runner.num_kv_heads * cfg.head_dim * avg_ctx * kv_elem
        w_bytes = weight_bytes_per_step(runner.model, cfg.tie_word_embeddings)
        step_s = decode["1"]["ms_per_decode_step"] / 1e3
        achieved = (w_bytes + kv_bytes) / step_s
        res["roofline_batch1"] = {"weight_bytes": w_bytes, "kv_bytes": int(kv_bytes), "step_ms": step_s * 1e3,
                                  "achieved_bytes_per_s": achieved,
                                  "fraction_of_spec": achieved / args.spec_bw if args.spec_bw else None,
                                  "fraction_of_measured_copy": achieved / args.copy_bw}
    del sched, runner, gr
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


# Throughput a capture mode may lose against capture off (None: reported, no budget; the
# mixed batch's loss is what its non-capturing half pays, since every row of a step waits
# for the same forward).
CAPTURE_LOSS_BUDGETS: dict[str, float | None] = {
    "fingerprint_auto": 0.03, "sketch_auto": 0.10, "raw_top32_auto": 0.15, "mixed_half_raw_top32_auto": None,
}


def targets(models: dict[str, Any]) -> dict[str, Any]:
    """The issues' targets, per model: >= 5x transformers at batch 32, >= 60% of the
    bandwidth roofline at batch 1, fingerprint capture within 2% of no capture, and the
    capture budgets of CAPTURE_LOSS_BUDGETS."""
    out = {}
    for name, m in models.items():
        if "error" in m:
            continue
        t: dict[str, Any] = {}
        d32 = m.get("decode", {}).get("32", {})
        if "speedup_vs_transformers" in d32:
            t["speedup_batch32"] = d32["speedup_vs_transformers"]
            t["speedup_batch32_ok"] = d32["speedup_vs_transformers"] >= 5.0
        roof = m.get("roofline_batch1", {})
        frac = roof.get("fraction_of_spec") or roof.get("fraction_of_measured_copy")
        if frac is not None:
            t["roofline_batch1"] = frac
            t["roofline_batch1_ok"] = frac >= 0.60
        modes = m.get("capture", {}).get("modes", {})
        fp = modes.get("fingerprint", {}).get("overhead_vs_off")
        if fp is not None:
            t["fingerprint_overhead"] = fp
            t["fingerprint_overhead_ok"] = fp <= 0.02
        # the capture issue's budgets, as throughput lost against capture off (graphs)
        base = modes.get("off", {}).get("decode_tokens_per_s")
        for mode, budget in CAPTURE_LOSS_BUDGETS.items():
            v = modes.get(mode, {}).get("decode_tokens_per_s")
            if base and v:
                t[f"{mode}_loss"] = 1.0 - v / base
                if budget is not None:
                    t[f"{mode}_loss_ok"] = t[f"{mode}_loss"] <= budget
        out[name] = t
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sglang.bench_gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"comma list of presets: {', '.join(PRESETS)}")
    p.add_argument("--batch-sizes", default="1,8,32,64", help="decode batch sizes (comma list)")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--decode-len", type=int, default=128)
    p.add_argument("--offline-requests", type=int, default=256, help="0 skips the offline run")
    p.add_argument("--offline-concurrency", type=int, default=64)
    p.add_argument("--capture-batch", type=int, default=32, help="batch size of the capture-overhead runs")
    p.add_argument("--capture-repeats", type=int, default=2, help="runs per capture mode, interleaved; the best is kept")
    p.add_argument("--chunked-prefill-size", type=int, default=8192)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--attention-backend", default=None, choices=("torch_native", "triton"))
    p.add_argument("--disable-cuda-graph", action="store_true")
    p.add_argument("--skip-hf", action="store_true", help="no transformers baseline")
    p.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache", "sglang", "bench_models"),
                   help="where the random-weight models are written (reused)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    try:
        a.batch_sizes = sorted({int(x) for x in a.batch_sizes.split(",") if x.strip()})
    except ValueError:
        p.error("--batch-sizes: give a comma list of integers, e.g. 1,8,32")
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = [m for m in a.models if m not in PRESETS]
    if bad:
        p.error(f"--models: unknown preset {bad[0]!r}; choose from {', '.join(PRESETS)}")
    for flag, v, lo in (("--prompt-len", a.prompt_len, 1), ("--decode-len", a.decode_len, 2),
                        ("--offline-requests", a.offline_requests, 0), ("--offline-concurrency",
                        a.offline_concurrency, 1), ("--capture-batch", a.capture_batch, 1),
                        ("--capture-repeats", a.capture_repeats, 1)):
        if v < lo:
            p.error(f"{flag} must be at least {lo}")
    if not a.batch_sizes or min(a.batch_sizes) < 1:
        p.error("--batch-sizes: every batch size must be at least 1")
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    args.spec_bw = spec_bandwidth(name) if device.type == "cuda" else None
    args.copy_bw = measured_copy_bandwidth(device)
    log(f"device {name}; measured copy bandwidth {args.copy_bw / 1e9:.0f} GB/s")
    report: dict[str, Any] = {
        "device": name, "torch": torch.__version__, "spec_bandwidth_bytes_per_s": args.spec_bw,
        "measured_copy_bandwidth_bytes_per_s": args.copy_bw,
        "settings": {k: v for k, v in vars(args).items() if k not in ("spec_bw", "copy_bw")},
        "models": {},
    }
    try:
        import triton

        report["triton"] = triton.__version__
    except ImportError:
        report["triton"] = None
    for m in args.models:
        log(f"model {m}")
        try:
            report["models"][m] = bench_model(m, args, device)
        except torch.cuda.OutOfMemoryError as e:  # a model too big for this GPU: report it, go on
            report["models"][m] = {"error": f"out of memory: {e}".splitlines()[0]}
            gc.collect()
            torch.cuda.empty_cache()
    report["targets"] = targets(report["models"])
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
