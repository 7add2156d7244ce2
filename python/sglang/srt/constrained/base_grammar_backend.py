"""What the scheduler and sampler need of a grammar backend, independent of the library.

A request's constraint is one ``GrammarKey`` (kind, text). The backend compiles it off
the scheduler's step (a worker thread; compiled grammars are cached, so a schema shared
by many requests is compiled once) and gives each request its own ``Grammar``: the
matcher state that accepts the request's tokens and writes the mask of allowed next
tokens into one row of a bitmask the sampler applies to the logits.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol

import torch

from sglang.srt.sampling.sampling_params import ANY_JSON, GRAMMAR_FIELDS  # noqa: F401 - re-exported


GrammarKey = tuple[str, str]


def grammar_key(params: Any) -> GrammarKey | None:
    """The (kind, text) of a request's constraint, or None when it has none."""
    for kind in GRAMMAR_FIELDS:  # at most one is set (SamplingParams.verify)
        value = getattr(params, kind, None)
        if value is not None:
            return kind, value
    return None


class Grammar(Protocol):
    """One request's position in its grammar."""

    def accept_token(self, token: int) -> bool: ...

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None: ...

    def is_terminated(self) -> bool: ...


class GrammarBackend(Protocol):
    def submit(self, key: GrammarKey) -> Future: ...

    def matcher(self, compiled: Any) -> Grammar: ...

    def allocate_bitmask(self, rows: int) -> torch.Tensor: ...

    def apply_bitmask(self, logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None: ...

    def shutdown(self) -> None: ...


class GrammarError(ValueError):
    """The constraint does not compile: the request gets 400 naming its field."""
