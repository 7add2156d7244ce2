"""Batched sampling: penalties, temperature, top-k, top-p, min-p, per-request seeds.

Temperature 0 (or top_k 1) is exact argmax. Every request has its own torch.Generator
(seeded from its ``seed``, else from the server seed and its arrival order), so a seeded
request samples the same tokens whatever else is in the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sglang.srt.sampling.sampling_params import SamplingParams


@dataclass
class SamplingInfo:
    """What the sampler needs of one request."""

    params: SamplingParams
    generator: torch.Generator
    prompt_ids: list[int]
    output_ids: list[int]


def _apply_penalties(logits: torch.Tensor, info: SamplingInfo) -> torch.Tensor:
    p = info.params
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(info.prompt_ids) | set(info.output_ids)), dtype=torch.long,
                            device=logits.device)
        if seen.numel():
            vals = logits[seen]
            logits[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if (p.frequency_penalty != 0.0 or p.presence_penalty != 0.0) and info.output_ids:
        ids, counts = torch.tensor(info.output_ids, device=logits.device).unique(return_counts=True)
        logits[ids] -= p.frequency_penalty * counts.to(logits.dtype) + p.presence_penalty
    return logits


def _filter(probs: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    if p.top_k > 0 and p.top_k < probs.numel():
        kth = torch.topk(probs, p.top_k).values[-1]
        probs = torch.where(probs < kth, torch.zeros_like(probs), probs)
    if p.top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, 0)
        drop = (cum - sorted_p) > p.top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, idx, sorted_p)
    if p.min_p > 0.0:
        probs = torch.where(probs < p.min_p * probs.max(), torch.zeros_like(probs), probs)
    return probs


def sample(logits: torch.Tensor, infos: list[SamplingInfo]) -> tuple[list[int], torch.Tensor]:
    """logits [B, V] float32 -> (next token ids, log-probabilities [B, V] after penalties)."""
    needs_penalty = any(i.params.repetition_penalty != 1.0 or i.params.frequency_penalty != 0.0
                        or i.params.presence_penalty != 0.0 for i in infos)
    if needs_penalty:
        logits = logits.clone()
        for row, info in enumerate(infos):
            _apply_penalties(logits[row], info)
    logprobs = torch.log_softmax(logits, dim=-1)
    greedy = torch.argmax(logits, dim=-1).tolist()
    out: list[int] = []
    for row, info in enumerate(infos):
        p = info.params
        if p.is_greedy:
            out.append(greedy[row])
            continue
        probs = torch.softmax(logits[row] / p.temperature, dim=-1)
        probs = _filter(probs, p)
        out.append(int(torch.multinomial(probs, 1, generator=info.generator).item()))
    return out, logprobs
