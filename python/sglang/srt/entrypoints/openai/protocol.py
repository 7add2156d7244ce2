"""Request models of the OpenAI-compatible and native endpoints.

Requests are parsed in pydantic's strict mode straight from the raw body bytes, so a
string where a number belongs, invalid JSON or invalid UTF-8 is a 400 naming the field
instead of a silent coercion. An unknown field is a 400 naming it (a field this server
does not implement is never silently ignored); an unknown field set to null is dropped.
Value ranges of sampling fields are checked once, by ``SamplingParams.from_dict``;
capture fields by ``capture_api``.
Responses are plain dicts serialized with orjson (see the serving modules).
"""
from __future__ import annotations

import json
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator, model_validator

from sglang.srt.entrypoints.openai.errors import APIError, from_value_error
from sglang.srt.sampling.sampling_params import ANY_JSON, GRAMMAR_FIELDS

Number = Union[StrictInt, StrictFloat]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """An unknown field set to null says nothing and is dropped (clients that send back
        a whole response message carry ``"refusal": null`` and the like); any other unknown
        field is a 400 naming it: nothing is silently ignored."""
        if isinstance(data, dict) and any(v is None and k not in cls.model_fields for k, v in data.items()):
            return {k: v for k, v in data.items() if v is not None or k in cls.model_fields}
        return data


class UpstreamOffFields(_Strict):
    """Upstream SGLang fields this server does not implement, accepted only at their "off"
    value (sglang-router 0.3.2 re-serializes every chat request with
    ``"return_hidden_states": false``); asking for the feature is a 400 naming it."""

    return_hidden_states: StrictBool = False

    @field_validator("return_hidden_states")
    @classmethod
    def _off_only(cls, v: bool) -> bool:
        if v:
            raise ValueError("not supported by this server")
        return v


class CaptureFields(_Strict):
    """Attention capture fields (OpenAI ``extra_body``; top level in /generate)."""

    return_attention_tokens: StrictBool | None = None
    top_k_attention: StrictInt | None = None
    attention_sketch_mode: StrictBool | None = None
    attention_fingerprint_mode: StrictBool | None = None
    attention_capture_layers: Union[StrictStr, list[StrictInt], None] = None
    attention_capture_head_ids: list[StrictInt] | None = None
    attention_capture_heads: Union[Literal["each"], list[StrictInt], None] = None
    attention_sink_tokens: StrictInt | None = None
    attention_fingerprint_version: StrictInt | None = None
    attention_mask_prefix: StrictInt | None = None
    attention_mask_system_prompt: StrictBool | None = None
    include_prompt_attention: StrictBool | None = None
    attention_adaptive_sampling: StrictBool | None = None
    # logit lens (captured decode steps): layers "last" | "auto" | ids, top tokens per layer
    return_logit_lens: StrictBool | None = None
    logit_lens_layers: Union[StrictStr, list[StrictInt], None] = None
    logit_lens_top_k: StrictInt | None = None


class SamplingFields(_Strict):
    """Sampling fields shared by chat and completions (OpenAI names + SGLang extras)."""

    temperature: Number | None = None
    top_p: Number | None = None
    top_k: StrictInt | None = None
    min_p: Number | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    repetition_penalty: Number | None = None
    stop: Union[StrictStr, list[StrictStr], None] = None
    stop_token_ids: list[StrictInt] | None = None
    seed: StrictInt | None = None
    ignore_eos: StrictBool = False
    skip_special_tokens: StrictBool = True
    no_stop_trim: StrictBool = False
    n: StrictInt = 1
    logit_bias: dict[str, Number] | None = None
    min_tokens: StrictInt | None = None  # SGLang's extra_body name for min_new_tokens
    # structured outputs in SGLang's extra_body names (OpenAI's way is response_format)
    regex: StrictStr | None = None
    ebnf: StrictStr | None = None
    json_schema: StrictStr | None = None
    structural_tag: StrictStr | None = None
    stop_regex: Union[StrictStr, list[StrictStr], None] = None
    response_format: "ResponseFormat | None" = None
    # upstream's custom logit processors (a server flag enables them)
    custom_logit_processor: StrictStr | None = None
    custom_params: dict[str, Any] | None = None
    stream: StrictBool = False
    stream_options: "StreamOptions | None" = None
    user: StrictStr | None = None
    rid: StrictStr | None = None


class JsonSchemaFormat(_Strict):
    name: StrictStr = "response"
    description: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class StructuralTagStructure(_Strict):
    begin: StrictStr
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    end: StrictStr
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class ResponseFormat(_Strict):
    """OpenAI's response_format, plus SGLang's structural_tag: {"type": "structural_tag",
    "structures": [{"begin", "schema", "end"}], "triggers": [...]} (or xgrammar's "format")."""

    type: Literal["text", "json_object", "json_schema", "structural_tag"]
    json_schema: JsonSchemaFormat | None = None
    structures: list[StructuralTagStructure] | None = None
    triggers: list[StrictStr] | None = None
    format: dict[str, Any] | None = None

    def constraint(self) -> tuple[str, str] | None:
        """(SamplingParams field, value) of this format; None for plain text."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return "json_schema", ANY_JSON
        if self.type == "json_schema":
            if self.json_schema is None or self.json_schema.schema_ is None:
                raise ValueError("response_format.json_schema.schema: field required for type json_schema")
            return "json_schema", json.dumps(self.json_schema.schema_)
        if self.format is not None:
            return "structural_tag", json.dumps({"type": "structural_tag", "format": self.format})
        if not self.structures or not self.triggers:
            raise ValueError("response_format.structures: structural_tag needs 'structures' and 'triggers' "
                             "(or a 'format')")
        return "structural_tag", json.dumps({
            "structures": [s.model_dump(by_alias=True) for s in self.structures], "triggers": self.triggers})


class StreamOptions(_Strict):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr


class FunctionDef(_Strict):
    name: StrictStr = Field(min_length=1, max_length=256)
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema
    strict: StrictBool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(_Strict):
    name: StrictStr


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


class FunctionCall(_Strict):
    name: StrictStr
    arguments: StrictStr  # JSON text, as OpenAI sends it


class ToolCall(_Strict):
    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCall
    index: StrictInt | None = None  # present when a client echoes a streamed call back


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[StrictStr, list[TextPart], None] = None
    name: StrictStr | None = None
    reasoning_content: StrictStr | None = None
    tool_call_id: StrictStr | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant turn that called tools

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(SamplingFields, CaptureFields, UpstreamOffFields):
    model: StrictStr = "default"
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = None
    # Reasoning (SGLang): split reasoning_content from content, stream it as it comes.
    separate_reasoning: StrictBool = True
    stream_reasoning: StrictBool = True
    chat_template_kwargs: dict[str, Any] | None = None
    continue_final_message: StrictBool = False
    tools: list[Tool] | None = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: StrictBool = True


class CompletionRequest(SamplingFields, CaptureFields, UpstreamOffFields):
    model: StrictStr = "default"
    prompt: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]
    max_tokens: StrictInt | None = 16  # OpenAI's default for completions
    logprobs: StrictInt | None = None  # number of top alternatives per token
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = None


class GenerateRequest(CaptureFields, UpstreamOffFields):
    """SGLang's native /generate body."""

    text: Union[StrictStr, list[StrictStr], None] = None
    input_ids: Union[list[StrictInt], list[list[StrictInt]], None] = None
    sampling_params: dict[str, Any] | None = None
    stream: StrictBool = False
    rid: StrictStr | None = None
    return_logprob: StrictBool = False
    top_logprobs_num: StrictInt = 0
    logprob_start_len: StrictInt = -1
    token_ids_logprob: list[StrictInt] | None = None
    custom_logit_processor: StrictStr | None = None
    return_text_in_logprobs: StrictBool = True


class ScoringRequest(_Strict):
    """POST /v1/score (upstream SGLang): how likely each label token is to come next after
    query + item (or item + query), for each item."""

    model: StrictStr = "default"
    query: Union[StrictStr, list[StrictInt], None] = None
    items: Union[list[StrictStr], list[list[StrictInt]]]
    label_token_ids: list[StrictInt]
    apply_softmax: StrictBool = False
    item_first: StrictBool = False


class TokenizeRequest(_Strict):
    """POST /tokenize (and /v1/tokenize), as upstream SGLang."""

    model: StrictStr = "default"
    prompt: Union[StrictStr, list[StrictStr]]
    add_special_tokens: StrictBool = True


class DetokenizeRequest(_Strict):
    """POST /detokenize (and /v1/detokenize), as upstream SGLang."""

    model: StrictStr = "default"
    tokens: Union[list[StrictInt], list[list[StrictInt]]]
    skip_special_tokens: StrictBool = True


SamplingFields.model_rebuild()
ChatCompletionRequest.model_rebuild()
CompletionRequest.model_rebuild()


def sampling_dict(req: SamplingFields, max_tokens: int | None) -> dict[str, Any]:
    """The SamplingParams dict of an OpenAI request (only fields the client set)."""
    d: dict[str, Any] = {"max_new_tokens": max_tokens}
    for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                 "repetition_penalty", "stop", "stop_token_ids", "seed"):
        v = getattr(req, name)
        if v is not None:
            d[name] = v
    d["ignore_eos"] = req.ignore_eos
    d["skip_special_tokens"] = req.skip_special_tokens
    d["no_stop_trim"] = req.no_stop_trim
    d["n"] = req.n
    if req.min_tokens is not None:
        d["min_new_tokens"] = req.min_tokens
    if req.logit_bias is not None:
        d["logit_bias"] = req.logit_bias
    for name in ("regex", "ebnf", "json_schema", "structural_tag", "stop_regex", "custom_params"):
        v = getattr(req, name)
        if v is not None:
            d[name] = v
    if req.response_format is not None:
        try:
            c = req.response_format.constraint()
        except ValueError as e:
            raise from_value_error(e) from None
        if c is not None:
            if any(d.get(k) is not None for k in GRAMMAR_FIELDS):
                raise APIError(400, "response_format: give either response_format or one of "
                               f"{', '.join(GRAMMAR_FIELDS)}, not both", "response_format")
            d[c[0]] = c[1]
    return d


# Client-visible name of each SamplingParams field on the OpenAI endpoints.
OPENAI_PARAM_NAMES = {f"sampling_params.{k}": k for k in (
    "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "stop", "stop_token_ids", "seed", "ignore_eos", "skip_special_tokens", "no_stop_trim", "n", "logit_bias",
    "regex", "ebnf", "json_schema", "structural_tag", "stop_regex", "custom_params")}
OPENAI_PARAM_NAMES["sampling_params.max_new_tokens"] = "max_tokens"
OPENAI_PARAM_NAMES["sampling_params.min_new_tokens"] = "min_tokens"
