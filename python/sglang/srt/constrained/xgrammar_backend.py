"""The xgrammar grammar backend (upstream SGLang's default)."""
from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from sglang.srt.constrained.base_grammar_backend import ANY_JSON, GrammarError, GrammarKey

logger = logging.getLogger(__name__)

# see XGrammarBackend._json_schema_ebnf
_BOUNDED_STRING_CHAR = r'[^\"\\\r\n]'
_JSON_STRING_CHAR = r'[^\0-\x1f\"\\]'
CACHE_SIZE = 256  # compiled grammars kept (xgrammar keeps its own byte-bounded cache too)


class XGrammarGrammar:
    """A request's xgrammar matcher."""

    def __init__(self, matcher: Any) -> None:
        self._m = matcher

    def accept_token(self, token: int) -> bool:
        return bool(self._m.accept_token(token))

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        self._m.fill_next_token_bitmask(bitmask, row)

    def is_terminated(self) -> bool:
        return bool(self._m.is_terminated())


class XGrammarBackend:
    def __init__(self, tokenizer: Any, vocab_size: int, any_whitespace: bool = True) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        # vocab_size is the model's (the logits' width), which may exceed the tokenizer's
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.vocab_size = vocab_size
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1)
        self.any_whitespace = any_whitespace
        # one worker: compiles run beside the scheduler's steps, never inside one
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar")
        self._cache: OrderedDict[GrammarKey, Future] = OrderedDict()

    def submit(self, key: GrammarKey) -> Future:
        fut = self._cache.get(key)
        if fut is not None and not (fut.done() and fut.exception() is not None):
            self._cache.move_to_end(key)
            return fut
        fut = self._pool.submit(self._compile, key)
        self._cache[key] = fut
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return fut

    def _compile(self, key: GrammarKey) -> Any:
        kind, value = key
        c = self.compiler
        try:
            if kind == "json_schema":
                if value == ANY_JSON:
                    return c.compile_builtin_json_grammar()
                return c.compile_grammar(self._json_schema_ebnf(value))
            if kind == "regex":
                return c.compile_regex(value)
            if kind == "ebnf":
                return c.compile_grammar(value)
            if kind == "structural_tag":
                return self._structural_tag(value)
        except GrammarError:
            raise
        except Exception as e:  # noqa: BLE001 - xgrammar raises RuntimeError/ValueError subclasses
            why = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", str(e)).strip()  # drop xgrammar's C++ location
            raise GrammarError(f"sampling_params.{kind}: the constraint does not compile: {why}") from None
        raise GrammarError(f"sampling_params.{kind}: unknown constraint kind")

    def _json_schema_ebnf(self, schema: str) -> str:
        """The schema's grammar as xgrammar writes it, with one repair: xgrammar 0.2.9 lets
        the characters of a length-bounded string ("maxLength"/"minLength") be any byte but
        quote, backslash, CR and LF, so a raw control character (which JSON forbids inside
        strings, and json.loads rejects) could be sampled. They get the class its unbounded
        strings use."""
        text = str(self._xgr.Grammar.from_json_schema(schema, any_whitespace=self.any_whitespace))
        return text.replace(_BOUNDED_STRING_CHAR, _JSON_STRING_CHAR)

    def _structural_tag(self, value: str) -> Any:
        """Upstream's legacy shape {"structures": [{"begin", "schema", "end"}], "triggers"},
        or xgrammar's {"type": "structural_tag", "format": ...}."""
        try:
            tag = json.loads(value)
        except ValueError as e:
            raise GrammarError(f"sampling_params.structural_tag: not valid JSON: {e}") from None
        if not isinstance(tag, dict):
            raise GrammarError("sampling_params.structural_tag: must be a JSON object")
        if "format" in tag:
            return self.compiler.compile_structural_tag(value)
        structures, triggers = tag.get("structures"), tag.get("triggers")
        if not isinstance(structures, list) or not isinstance(triggers, list) or not triggers:
            raise GrammarError("sampling_params.structural_tag: needs 'structures' (a list of {begin, schema, end}) "
                               "and a non-empty 'triggers' list, or a 'format'")
        items = []
        for s in structures:
            if not isinstance(s, dict) or not {"begin", "end"} <= set(s):
                raise GrammarError("sampling_params.structural_tag: each structure needs 'begin', 'schema', 'end'")
            schema = s.get("schema", {})
            items.append(self._xgr.StructuralTagItem(begin=s["begin"], schema=json.dumps(schema), end=s["end"]))
        return self.compiler.compile_structural_tag(items, triggers)

    def matcher(self, compiled: Any) -> XGrammarGrammar:
        return XGrammarGrammar(self._xgr.GrammarMatcher(compiled))

    def allocate_bitmask(self, rows: int) -> torch.Tensor:
        return self._xgr.allocate_token_bitmask(rows, self.vocab_size)

    def apply_bitmask(self, logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
        """Disallowed tokens of ``rows`` -> -inf, in place (bitmask and logits share rows)."""
        self._xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), vocab_size=self.vocab_size,
                                              indices=rows)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def create_grammar_backend(name: str, tokenizer: Any, vocab_size: int, any_whitespace: bool = True) -> XGrammarBackend | None:
    """The backend --grammar-backend names, or None for "none" (constrained requests are
    refused at the door then)."""
    if name == "none" or tokenizer is None:
        return None
    if name != "xgrammar":
        raise ValueError(f"--grammar-backend: unknown backend {name!r} (xgrammar | none)")
    return XGrammarBackend(tokenizer, vocab_size, any_whitespace)
