"""Request parsing steps shared by the OpenAI and native handlers."""
from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from sglang.srt.entrypoints.capture_api import CaptureSlot, build_capture_params, explicit_capture, wants_capture
from sglang.srt.entrypoints.openai.errors import APIError, FastJSONResponse, from_pydantic, from_value_error
from sglang.srt.entrypoints.openai.protocol import CaptureFields
from sglang.srt.managers.io_struct import CaptureParams
from sglang.srt.sampling.sampling_params import SamplingParams

M = TypeVar("M", bound=BaseModel)



def parse_body(model: type[M], body: bytes) -> M:
    """Strict parse of the raw body: invalid JSON/UTF-8 or a wrong type -> 400 naming the field.
    (Its size was already bounded by ``http_limits.BodyLimitMiddleware``, before it was read.)"""
    if not body.strip():
        raise APIError(400, "request body is empty; send a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise from_pydantic(e) from None


def validate_sampling(d: dict[str, Any], rename: dict[str, str] | None = None) -> SamplingParams:
    try:
        return SamplingParams.from_dict(d)
    except (ValueError, TypeError) as e:
        if isinstance(e, TypeError):  # dataclass constructor: wrong keyword
            raise APIError(400, f"sampling_params: {e}", "sampling_params") from None
        raise from_value_error(e, rename) from None


def prepare_capture(ctx: Any, req: CaptureFields, request: Request) -> tuple[CaptureParams | None, CaptureSlot | None]:
    """Guardrails, then validation, then a capture slot. Returns (None, None) when not capturing.

    A request that asks for capture without the attention key gets 401; a request that
    would only capture because of --attention-capture-default just runs without capture.
    The caller releases the slot when the request ends (``tracked_generate`` does, through
    ``GenerateReqInput.capture_slot``).
    """
    guard = ctx.guard
    if wants_capture(req, ctx.server_args) and guard.api_key:
        try:
            guard.check_key(request.headers)
        except APIError:
            if explicit_capture(req):
                ctx.metrics.capture_rejected.inc()
                raise
            # implicit (server default) capture without the key: no capture
            return _validated_without_capture(ctx, req), None
    capture = build_capture_params(req, ctx.server_args, ctx.model_info)
    if capture is None:
        return None, None
    try:
        return capture, guard.acquire()
    except APIError:
        ctx.metrics.capture_rejected.inc()
        raise


def _validated_without_capture(ctx: Any, req: CaptureFields) -> None:
    off = req.model_copy(update={"return_attention_tokens": False})
    build_capture_params(off, ctx.server_args, ctx.model_info)
    return None


def json_response(obj: Any, status: int = 200) -> FastJSONResponse:
    return FastJSONResponse(obj, status_code=status)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
