"""Calibrate the zone thresholds of version-2 (sink-aware) fingerprints on real fingerprints.

Runs the engine (the default SmolLM2 unless --model-path) greedily over a varied prompt set:
short chats of several kinds (code, arithmetic, lists, prose, translation, facts), questions
about long documents (Python source and prose from the standard library, 300-1,500
tokens), and one chat behind neutral prefixes of growing length. Every prompt runs with
fingerprint capture in both versions at once (greedy: the same tokens), on the last layer
and on the "auto" layers. From those fingerprints it

* derives the version-2 thresholds: each zone fires for the top fifth of the steps on its
  signal (the 80th percentile of local, mid and long mass and of ripple), diffuse for the
  top tenth of the normalized entropy, focused for the bottom tenth; rounded to 0.01;
* reports, per version, the zone shares over the set and how the long-range and mid masses
  move with the prompt length (the neutral-prefix prompts);
* writes the version-2 PCA interpretation defaults (--write-pca) and a plot (--plot).

Prints one JSON document (also written to --out)::

    python -m sglang.calibrate_zones --out benchmarks/results/zone_calibration.json \\
        --plot docs/images/zones_v1_v2.png \\
        --write-pca python/sglang/srt/attention_sidecar/data/pca_interpretation_v2.json
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

CHATS = [
    "Write a Python function that checks whether a string is a palindrome, with a docstring.",
    "Explain in three sentences why the sky is blue.",
    "List five fruits and one fact about each, as a markdown table.",
    "What is 17 times 23? Show your steps.",
    "Translate 'good morning, how are you?' into French and Spanish.",
    "Summarize the plot of a story about a lighthouse keeper who finds a message in a bottle.",
    "Write a haiku about autumn rain, then explain its imagery.",
    "Give me a JSON object describing a book with title, author, year and three keywords.",
    "What are the differences between a list and a tuple in Python?",
    "Write a short email asking a colleague to review a pull request by Friday.",
    "Name the planets of the solar system in order and give each one's number of moons.",
    "Write a SQL query that returns the ten customers with the highest total order value.",
]
DOC_QUESTIONS = [
    "Summarize what this text is about in two sentences.",
    "List the main functions or ideas defined above.",
]
NEUTRAL_LINE = "This line is part of a neutral preamble and can be ignored.\n"
NEUTRAL_PREFIX_LINES = [0, 8, 24, 64]
LENGTH_PROBE = "Explain in three sentences why the sky is blue."


@dataclass
class Prompt:
    name: str
    kind: str  # chat | document | prefix
    messages: list[dict[str, str]]
    prefix_lines: int = 0


def _documents(tokenizer: Any) -> list[tuple[str, str]]:
    """Long texts from the standard library, cut to 300, 800 and 1,500 tokens."""
    import argparse as ap
    import json.decoder
    import textwrap

    src = [("textwrap.py", inspect.getsource(textwrap)), ("json_decoder.py", inspect.getsource(json.decoder)),
           ("argparse_doc", (ap.__doc__ or "") + "\n" + (inspect.getdoc(ap.ArgumentParser) or "")
            + "\n" + (inspect.getdoc(ap.ArgumentParser.add_argument) or "") * 3)]
    out = []
    for (name, text), n in zip(src, (1500, 800, 300)):
        ids = tokenizer.encode(text)[:n]
        out.append((f"{name}[:{len(ids)}]", tokenizer.decode(ids)))
    return out


def prompt_set(tokenizer: Any) -> list[Prompt]:
    ps = [Prompt(f"chat{i}", "chat", [{"role": "user", "content": c}]) for i, c in enumerate(CHATS)]
    for name, doc in _documents(tokenizer):
        for j, q in enumerate(DOC_QUESTIONS):
            ps.append(Prompt(f"{name}/q{j}", "document", [{"role": "user", "content": f"{doc}\n\n{q}"}]))
    for n in NEUTRAL_PREFIX_LINES:
        ps.append(Prompt(f"prefix{n}", "prefix", [{"role": "system", "content": NEUTRAL_LINE * n or "Be brief."},
                                                  {"role": "user", "content": LENGTH_PROBE}], n))
    return ps


def collect(engine: Any, prompts: list[Prompt], new_tokens: int, layer_sets: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (prompt, layer set, decode step): both versions' fingerprints and sink_mass."""
    from tqdm import tqdm

    from sglang.srt.managers.io_struct import CaptureParams

    rows: list[dict[str, Any]] = []
    sp = {"temperature": 0.0, "max_new_tokens": new_tokens}
    for p in tqdm(prompts, desc="prompts", file=sys.stderr):
        text = engine.tokenizer.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        ids = engine.tokenizer.encode(text, add_special_tokens=False)
        variants = [(lname, v) for lname in layer_sets for v in (1, 2)]

        async def run_all() -> list[dict[str, Any]]:  # the four variants decode as one batch
            return await asyncio.gather(*(engine.async_generate(
                input_ids=ids, sampling_params=sp, capture=CaptureParams(
                    mode="fingerprint", layers=layer_sets[lname], fingerprint_version=v, max_steps=0))
                for lname, v in variants))

        outs = dict(zip(variants, engine.loop.run_until_complete(run_all())))
        for lname in layer_sets:
            o1, o2 = outs[(lname, 1)], outs[(lname, 2)]
            assert o1["output_ids"] == o2["output_ids"], "greedy outputs differ between versions"
            e1, e2 = (o["meta_info"].get("attention_tokens") or [] for o in (o1, o2))
            for a, b in zip(e1, e2):
                rows.append({"prompt": p.name, "kind": p.kind, "prefix_lines": p.prefix_lines, "layers": lname,
                             "prompt_len": len(ids), "step": a["decode_step"], "query_position": a["query_position"],
                             "v1": a["fingerprint"], "v2": b["fingerprint"], "sink_mass": b["sink_mass"]})
    return rows


def _ripple(fp: np.ndarray) -> np.ndarray:
    from sgl_kernel import zones

    return np.array([zones.ripple(v[4:]) for v in fp])


def derive_thresholds(v2: np.ndarray) -> tuple[dict[str, float], float]:
    """Quantile rule of the module docstring over version-2 fingerprints [n, 20]."""
    q = lambda x, p: round(float(np.quantile(x, p)), 2)  # noqa: E731
    th = {
        "syntax_floor": q(v2[:, 0], 0.8),
        "semantic_bridge": q(v2[:, 1], 0.8),
        "long_range": max(q(v2[:, 2], 0.8), 0.05),  # long mass needs far keys: never a zero threshold
        "structure_ripple": max(q(_ripple(v2), 0.8), 0.05),
        "diffuse": q(v2[:, 3], 0.9),
    }
    return th, q(v2[:, 3], 0.1)


def zone_shares(fp: np.ndarray, version: int) -> dict[str, float]:
    from sgl_kernel import zones

    names = [zones.classify(v, version).zone for v in fp]
    return {z: round(names.count(z) / max(len(names), 1), 4) for z in zones.ZONES}


def length_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean long and mid mass of each version and the sink mass per neutral-prefix length."""
    out = []
    for n in NEUTRAL_PREFIX_LINES:
        sel = [r for r in rows if r["kind"] == "prefix" and r["prefix_lines"] == n and r["layers"] == "auto"]
        if not sel:
            continue
        v1 = np.array([r["v1"] for r in sel])
        v2 = np.array([r["v2"] for r in sel])
        out.append({"prefix_lines": n, "prompt_len": sel[0]["prompt_len"], "steps": len(sel),
                    "sink_mass": round(float(np.mean([r["sink_mass"] for r in sel])), 4),
                    "v1_long": round(float(v1[:, 2].mean()), 4), "v1_mid": round(float(v1[:, 1].mean()), 4),
                    "v2_long": round(float(v2[:, 2].mean()), 4), "v2_mid": round(float(v2[:, 1].mean()), 4)})
    return out


def plot(path: str, v1: np.ndarray, v2: np.ndarray, th2: dict[str, float], shares: dict[str, dict[str, float]],
         lengths: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sgl_kernel import zones

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    x = np.arange(len(zones.ZONES))
    ax[0].bar(x - 0.2, [shares["v1"][z] for z in zones.ZONES], 0.4, label="version 1 (spec thresholds)")
    ax[0].bar(x + 0.2, [shares["v2"][z] for z in zones.ZONES], 0.4, label="version 2 (re-derived)")
    ax[0].set_xticks(x, [z.replace("_", "\n") for z in zones.ZONES])
    ax[0].set_ylabel("share of decode steps")
    ax[0].set_title("Zone assignments over the calibration set")
    ax[0].legend(fontsize=8)
    for i, (name, col) in enumerate((("local", 0), ("mid", 1), ("long", 2))):
        ax[1].hist(v1[:, col], bins=40, range=(0, 1), histtype="step", color=f"C{i}", ls="--",
                   label=f"{name} v1")
        ax[1].hist(v2[:, col], bins=40, range=(0, 1), histtype="step", color=f"C{i}", label=f"{name} v2")
    for z, col in (("syntax_floor", 0), ("semantic_bridge", 1), ("long_range", 2)):
        ax[1].axvline(th2[z], color=f"C{col}", lw=0.8)
    ax[1].set_yscale("log")
    ax[1].set_xlabel("mass (solid lines: version-2 thresholds)")
    ax[1].set_title("Local / mid / long mass, v1 dashed, v2 solid")
    ax[1].legend(fontsize=7, ncol=2)
    plen = [r["prompt_len"] for r in lengths]
    ax[2].plot(plen, [r["v1_long"] for r in lengths], "o--", color="C2", label="long mass, v1")
    ax[2].plot(plen, [r["v2_long"] for r in lengths], "o-", color="C2", label="long mass, v2")
    ax[2].plot(plen, [r["v1_mid"] for r in lengths], "^--", color="C1", label="mid mass, v1")
    ax[2].plot(plen, [r["v2_mid"] for r in lengths], "^-", color="C1", label="mid mass, v2")
    ax[2].plot(plen, [r["sink_mass"] for r in lengths], "s:", color="k", label="sink_mass")
    ax[2].set_ylim(0, 1)
    ax[2].set_xlabel("prompt tokens (same question, neutral prefix)")
    ax[2].set_title("Same question, longer prompt (auto layers)")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--out", default=None, help="write the JSON report here too")
    ap.add_argument("--plot", default=None, help="PNG of zone shares, masses and the length dependence")
    ap.add_argument("--write-pca", default=None, help="write version-2 PCA interpretation defaults here")
    ap.add_argument("--save-fingerprints", default=None, help=".npz of every row's v1/v2 fingerprints")
    args = ap.parse_args(argv)
    if args.new_tokens < 1:
        print("error: --new-tokens must be >= 1", file=sys.stderr)
        return 2
    import sglang
    from sgl_kernel import zones
    from sglang.srt.managers.io_struct import auto_layers

    t0 = time.time()
    engine = sglang.Engine(model_path=args.model_path, return_attention_tokens=True, max_total_tokens=16384)
    try:
        n_layers = engine.model_info["num_layers"]
        prompts = prompt_set(engine.tokenizer_manager.tokenizer)
        rows = collect(engine, prompts, args.new_tokens, {"last": [n_layers - 1], "auto": auto_layers(n_layers)})
    finally:
        engine.shutdown()
    v1 = np.array([r["v1"] for r in rows])
    v2 = np.array([r["v2"] for r in rows])
    th2, focused2 = derive_thresholds(v2)
    saved = dict(zones.THRESHOLDS_V2), zones.FOCUSED_ENTROPY_V2
    zones.THRESHOLDS_V2.update(th2)
    zones.FOCUSED_ENTROPY_V2 = focused2
    shares = {"v1": zone_shares(v1, 1), "v2": zone_shares(v2, 2)}
    zones.THRESHOLDS_V2.clear()
    zones.THRESHOLDS_V2.update(saved[0])
    zones.FOCUSED_ENTROPY_V2 = saved[1]
    lengths = length_table(rows)
    report = {
        "model": engine.model_info.get("model_path") or "default",
        "prompts": len(prompts), "fingerprints": len(rows), "new_tokens": args.new_tokens,
        "rule": "80th percentile of local/mid/long mass and ripple, 90th of normalized entropy (diffuse), "
                "10th (focused); version-2 fingerprints, last and auto layers",
        "thresholds_v2": th2, "focused_entropy_v2": focused2,
        "thresholds_v1": dict(zones.THRESHOLDS),
        "zone_shares": shares,
        "mean_sink_mass": round(float(np.mean([r["sink_mass"] for r in rows])), 4),
        "length_dependence": lengths,
        "seconds": round(time.time() - t0, 1),
    }
    if args.save_fingerprints:
        np.savez_compressed(args.save_fingerprints, v1=v1, v2=v2, sink_mass=np.array([r["sink_mass"] for r in rows]),
                            prompt=np.array([r["prompt"] for r in rows]), layers=np.array([r["layers"] for r in rows]))
    if args.write_pca:
        from sglang.srt.attention_sidecar import pca_interpretation

        doc = pca_interpretation.compute(v2, {"description": "SmolLM2-135M-Instruct version-2 (sink-aware) "
                                                             "fingerprints captured by the engine "
                                                             "(python -m sglang.calibrate_zones)",
                                              "prompts": len(prompts)})
        doc["fingerprint_version"] = 2
        with open(args.write_pca, "w") as f:
            json.dump(doc, f, indent=1)
    if args.plot:
        plot(args.plot, v1, v2, th2, shares, lengths)
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
