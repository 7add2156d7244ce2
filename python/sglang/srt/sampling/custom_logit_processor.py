"""Custom logit processors, as upstream SGLang defines them: a client subclasses
``CustomLogitProcessor``, serializes it with ``to_str()`` and sends the string as the
request's ``custom_logit_processor``; ``sampling_params.custom_params`` is handed to it.

Deserializing runs the client's code in the scheduler process, so a server accepts them
only when started with ``--enable-custom-logit-processor`` (as upstream).
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Any

import torch


class CustomLogitProcessor(ABC):
    @abstractmethod
    def __call__(self, logits: torch.Tensor, custom_param_list: list[dict[str, Any]] | None = None) -> torch.Tensor:
        """logits [rows, vocab] of the requests that use this processor (one param dict per
        row: the request's custom_params plus ``__req__``, its scheduler state) -> logits."""

    @classmethod
    def to_str(cls) -> str:
        import dill

        return json.dumps({"callable": dill.dumps(cls).hex()})

    @classmethod
    def from_str(cls, text: str) -> "CustomLogitProcessor":
        return _load(text)()


@lru_cache(maxsize=64)
def _load(text: str) -> Any:
    """The processor class of a ``to_str()`` string (cached: every step of every request
    that sends the same string reuses it)."""
    import dill

    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("callable"), str):
        raise ValueError('expected {"callable": "<hex of the dill-serialized class>"}')
    return dill.loads(bytes.fromhex(data["callable"]))


def load_processor(text: str) -> CustomLogitProcessor:
    """An instance of the processor a request sent; ValueError naming the field otherwise."""
    try:
        obj = _load(text)
        proc = obj() if isinstance(obj, type) else obj
    except Exception as e:  # noqa: BLE001 - whatever the client sent, it is the client's error
        raise ValueError(f"custom_logit_processor: cannot load it: {type(e).__name__}: {e}") from None
    if not callable(proc):
        raise ValueError("custom_logit_processor: not a callable processor")
    return proc
