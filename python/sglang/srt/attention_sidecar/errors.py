"""OpenAI-style errors shared by the sidecar HTTP APIs.

Every client mistake answers HTTP 400 with ``{"error": {"message", "type", "param", "code"}}``
where ``param`` names the offending field, so a caller can fix its request without reading
server logs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from sgl_kernel.zones import FINGERPRINT_DIM, FINGERPRINT_VERSIONS


@dataclass
class ApiError(Exception):
    message: str
    param: str | None = None
    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def fast_json_response(obj: Any, status: int = 200) -> Any:
    """JSON response serialized with orjson: FastAPI's default encoder walks every value and
    cost more than the classification itself on the /classify hot path."""
    from starlette.responses import Response

    try:
        import orjson

        # numpy arrays are written directly (float32 with its shortest float32 text)
        body = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except ImportError:  # pragma: no cover
        body = json.dumps(obj, default=lambda o: o.tolist()).encode()
    return Response(body, status_code=status, media_type="application/json")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    if not raw:
        raise ApiError("request body is empty; expected a JSON object", code="invalid_json")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise ApiError(f"request body must be a JSON object, got {type(obj).__name__}", code="invalid_json")
    return obj


def parse_vector(value: Any, param: str = "vector") -> list[float]:
    """A 20-float fingerprint from JSON, or ApiError naming ``param``."""
    if not isinstance(value, list):
        raise ApiError(f"'{param}' must be a list of {FINGERPRINT_DIM} numbers", param=param, code="invalid_vector")
    if len(value) != FINGERPRINT_DIM:
        raise ApiError(
            f"'{param}' must have {FINGERPRINT_DIM} values, got {len(value)}", param=param, code="invalid_vector"
        )
    out: list[float] = []
    for i, x in enumerate(value):
        # bool is an int subclass in Python; JSON true/false is never a fingerprint value
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ApiError(f"'{param}[{i}]' must be a number, got {json.dumps(x)[:40]}", param=param,
                           code="invalid_vector")
        if not math.isfinite(x):
            raise ApiError(f"'{param}[{i}]' is NaN or infinity", param=param, code="invalid_vector")
        out.append(float(x))
    return out


def parse_vectors(body: dict[str, Any], max_batch: int = 10000,
                  parse: Callable[[Any, str], list[float]] | None = None) -> tuple[list[list[float]], bool]:
    """Either ``{"vector": [...]}`` (single) or ``{"vectors": [[...], ...]}`` (batch); each
    vector goes through ``parse(value, param)`` (default: :func:`parse_vector`)."""
    parse = parse or parse_vector
    if "vector" in body and "vectors" in body:
        raise ApiError("give either 'vector' or 'vectors', not both", param="vectors")
    if "vectors" in body:
        vs = body["vectors"]
        if not isinstance(vs, list) or not vs:
            raise ApiError("'vectors' must be a non-empty list of fingerprints", param="vectors")
        if len(vs) > max_batch:
            raise ApiError(f"'vectors' holds {len(vs)} fingerprints, at most {max_batch} per request",
                           param="vectors")
        return [parse(v, f"vectors[{i}]") for i, v in enumerate(vs)], True
    if "vector" not in body:
        raise ApiError("missing required field 'vector'", param="vector", code="missing_field")
    return [parse(body["vector"], "vector")], False


def parse_int_param(params: Any, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter in [lo, hi] (decimal digits only), or ApiError naming it."""
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise ApiError(f"'{name}' must be an integer in [{lo}, {hi}], got {json.dumps(raw)[:40]}", param=name,
                       code="invalid_parameter")
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiError(f"'{name}' must be an integer in [{lo}, {hi}], got {value}", param=name,
                       code="invalid_parameter")
    return value


def parse_fingerprint_version(value: Any, param: str = "fingerprint_version", query: bool = False) -> int | None:
    """An optional fingerprint version (``sgl_kernel.zones.FINGERPRINT_VERSIONS``) from a JSON body
    (an integer) or, with ``query``, a query string: None when absent, else the version, or
    ApiError naming ``param``."""
    if value is None:
        return None
    if query and isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 3:
        value = int(value)
    if type(value) is not int or value not in FINGERPRINT_VERSIONS:
        raise ApiError(f"'{param}' must be one of {list(FINGERPRINT_VERSIONS)}, got {json.dumps(value)[:40]}",
                       param=param, code="invalid_fingerprint_version")
    return value


def version_mismatch(asked: int, serving: int, what: str, param: str = "fingerprint_version") -> ApiError:
    """400 for fingerprints of version ``asked`` sent to a model of version ``serving``."""
    return ApiError(f"'{param}' is {asked} but {what} holds version {serving} fingerprints; distances between "
                    f"fingerprints of different versions mean nothing, so they are not compared",
                    param=param, code="fingerprint_version_mismatch")
