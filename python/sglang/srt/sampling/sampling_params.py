"""Per-request sampling parameters (SGLang's names and defaults)."""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sglang.srt.limits import MAX_GRAMMAR_CHARS, MAX_LOGIT_BIAS, MAX_NEW_TOKENS, MAX_PARALLEL_SAMPLES

GRAMMAR_FIELDS = ("json_schema", "regex", "ebnf", "structural_tag")
ANY_JSON = "$$ANY$$"  # json_schema meaning "any JSON value" (response_format json_object), as upstream
# Temperatures below this sample greedily, as in upstream SGLang: dividing logits by a
# denormal temperature overflows to inf (and the softmax to nan), while at 1e-6 every
# logit more than 1e-4 below the maximum already gets a probability under float32's
# smallest normal number, so greedy is what the distribution says anyway.
SAMPLING_EPS = 1e-6


@dataclass
class SamplingParams:
    max_new_tokens: int | None = 128  # None: until the context is full (resolved at admission)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 = no top-k
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    seed: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    n: int = 1
    # stop tokens and strings (EOS included) cannot end the output before this many tokens
    min_new_tokens: int = 0
    # added to the logits of these token ids before sampling (OpenAI's range: -100..100;
    # -100 bans a token, 100 forces it); JSON keys are strings, as OpenAI sends them
    logit_bias: dict[int, float] | None = None
    # structured outputs (at most one; see sglang.srt.constrained): a JSON schema as JSON
    # text ("$$ANY$$": any JSON value), a regular expression, an EBNF grammar (GBNF as
    # xgrammar reads it), or a structural tag as JSON text
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    structural_tag: str | None = None
    # regular expressions that end the output like stop strings (matched on the output text)
    stop_regex: list[str] = field(default_factory=list)
    # handed to the request's custom_logit_processor (upstream's name)
    custom_params: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "SamplingParams":
        """Build from a request dict; unknown keys and wrong types raise ValueError naming the field."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"sampling_params.{unknown[0]}: unknown sampling parameter")
        for k in ("stop", "stop_regex"):
            if isinstance(d.get(k), str):
                d[k] = [d[k]]
        if isinstance(d.get("json_schema"), dict):  # the Engine may pass the schema itself
            d["json_schema"] = json.dumps(d["json_schema"])
        for k in ("stop", "stop_token_ids", "logit_bias", "stop_regex", "custom_params", *GRAMMAR_FIELDS):
            if d.get(k) is None:
                d.pop(k, None)
        if d.get("min_new_tokens") is None:
            d.pop("min_new_tokens", None)
        if isinstance(d.get("logit_bias"), dict):
            bias: dict[int, float] = {}
            for key, v in d["logit_bias"].items():
                try:
                    bias[int(key)] = v
                except (TypeError, ValueError):
                    raise ValueError(f"sampling_params.logit_bias: keys must be token ids, got {key!r}") from None
            d["logit_bias"] = bias
        p = cls(**d)
        p.verify()
        return p

    def verify(self, vocab_size: int | None = None) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"sampling_params.{name}: {why}")

        def num(name: str, integer: bool = False) -> float:
            v = getattr(self, name)
            ok = isinstance(v, int) if integer else isinstance(v, (int, float))
            if not ok or isinstance(v, bool) or v != v or v in (float("inf"), float("-inf")):
                raise bad(name, f"must be a finite {'integer' if integer else 'number'}, got {v!r}")
            return v

        if self.max_new_tokens is not None and not 0 <= num("max_new_tokens", True) <= MAX_NEW_TOKENS:
            raise bad("max_new_tokens", f"must be between 0 and {MAX_NEW_TOKENS}")
        if not 0.0 <= num("temperature") <= 100.0:
            raise bad("temperature", "must be between 0 and 100")
        if not 0.0 < num("top_p") <= 1.0:
            raise bad("top_p", "must be in (0, 1]")
        top_k = num("top_k", True)
        if top_k == 0 or top_k < -1:
            raise bad("top_k", "must be -1 (disabled) or at least 1")
        if not 0.0 <= num("min_p") <= 1.0:
            raise bad("min_p", "must be in [0, 1]")
        if not 0.0 < num("repetition_penalty") <= 2.0:
            raise bad("repetition_penalty", "must be in (0, 2] (1 = no penalty)")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= num(name) <= 2.0:
                raise bad(name, "must be between -2 and 2")
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop", "must be a non-empty string or a list of non-empty strings")
        if len(self.stop) > 16:
            raise bad("stop", "at most 16 stop strings")
        if not isinstance(self.stop_token_ids, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.stop_token_ids
        ):
            raise bad("stop_token_ids", "must be a list of non-negative integers")
        if vocab_size is not None and any(t >= vocab_size for t in self.stop_token_ids):
            raise bad("stop_token_ids", f"token ids must be < vocab size {vocab_size}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise bad("seed", "must be a non-negative integer")
        for name in ("ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be a boolean")
        if not isinstance(self.min_new_tokens, int) or isinstance(self.min_new_tokens, bool) or \
                self.min_new_tokens < 0 or (self.max_new_tokens is not None and self.min_new_tokens > self.max_new_tokens):
            raise bad("min_new_tokens", "must be an integer in [0, max_new_tokens]")
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict) or len(self.logit_bias) > MAX_LOGIT_BIAS:
                raise bad("logit_bias", f"must be a map of at most {MAX_LOGIT_BIAS} token ids to numbers")
            for tid, v in self.logit_bias.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not -100.0 <= v <= 100.0:
                    raise bad("logit_bias", f"bias of token {tid} must be a number in [-100, 100], got {v!r}")
                if tid < 0 or (vocab_size is not None and tid >= vocab_size):
                    raise bad("logit_bias", f"token id {tid} is outside the vocabulary")
        constraints = [k for k in GRAMMAR_FIELDS if getattr(self, k) is not None]
        for k in constraints:
            v = getattr(self, k)
            if not isinstance(v, str) or not v.strip():
                raise bad(k, "must be a non-empty string")
            if len(v) > MAX_GRAMMAR_CHARS:
                raise bad(k, f"at most {MAX_GRAMMAR_CHARS} characters")
        if len(constraints) > 1:
            raise bad(constraints[1], f"only one of {', '.join(GRAMMAR_FIELDS)} per request (got {constraints[0]} too)")
        if self.json_schema is not None and self.json_schema != ANY_JSON:
            try:
                json.loads(self.json_schema)
            except ValueError as e:
                raise bad("json_schema", f"not valid JSON: {e}") from None
        if not isinstance(self.stop_regex, list) or not all(isinstance(s, str) and s for s in self.stop_regex):
            raise bad("stop_regex", "must be a non-empty string or a list of non-empty strings")
        if len(self.stop_regex) > 16:
            raise bad("stop_regex", "at most 16 patterns")
        for pattern in self.stop_regex:
            try:
                re.compile(pattern)
            except re.error as e:
                raise bad("stop_regex", f"{pattern!r} is not a valid regular expression: {e}") from None
        if self.custom_params is not None:
            if not isinstance(self.custom_params, dict):
                raise bad("custom_params", "must be a JSON object")
            try:
                size = len(json.dumps(self.custom_params))
            except (TypeError, ValueError):
                raise bad("custom_params", "must be JSON (strings, numbers, lists, objects)") from None
            if size > MAX_GRAMMAR_CHARS:
                raise bad("custom_params", f"at most {MAX_GRAMMAR_CHARS} characters of JSON")
        if not isinstance(self.n, int) or isinstance(self.n, bool) or not 1 <= self.n <= MAX_PARALLEL_SAMPLES:
            raise bad("n", f"must be an integer in [1, {MAX_PARALLEL_SAMPLES}]")

    @property
    def constrained(self) -> bool:
        return any(getattr(self, k) is not None for k in GRAMMAR_FIELDS)

    @property
    def is_greedy(self) -> bool:
        return self.temperature < SAMPLING_EPS or self.top_k == 1

    def samples(self) -> list["SamplingParams"]:
        """The ``n`` parallel samples of one prompt, each a request of its own (n = 1). A
        seeded request's samples use seeds seed, seed + 1, ...: they differ from each other
        and each is reproducible."""
        return [dataclasses.replace(self, n=1, seed=None if self.seed is None else self.seed + j)
                for j in range(self.n)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
