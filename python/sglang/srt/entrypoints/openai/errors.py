"""OpenAI-style error bodies and the exception that carries them through handlers.

Every error the server returns has the shape
``{"error": {"message", "type", "param", "code"}}`` (``code`` is the HTTP status), and
``message`` names the offending field, so a client can fix the request without reading
server logs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import JSONResponse

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_server_error",
    503: "service_unavailable",
}


class FastJSONResponse(JSONResponse):
    """JSON via orjson (numpy arrays and scalars allowed; capture entries can be large)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


@dataclass
class APIError(Exception):
    """Raise anywhere in request handling; the app turns it into the JSON body."""

    status: int
    message: str
    param: str | None = None

    def __str__(self) -> str:  # pragma: no cover - used only in logs
        return f"{self.status} {self.message}"


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": status}}


def error_response(status: int, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> FastJSONResponse:
    return FastJSONResponse(error_body(status, message, param), status_code=status, headers=headers)


def sse_error(status: int, message: str, param: str | None = None) -> bytes:
    """An error that happens after an SSE stream has started: one data event."""
    return b"data: " + orjson.dumps(error_body(status, message, param)) + b"\n\n"


_PARAM_RE = re.compile(r"^([A-Za-z_][\w.\[\]]*):\s")


def from_value_error(err: Exception, rename: dict[str, str] | None = None) -> APIError:
    """A ValueError from validation code ("field: why") -> 400 naming the field.

    ``rename`` maps internal names to the names the client sent (for example
    ``sampling_params.max_new_tokens`` -> ``max_tokens`` on the OpenAI endpoints).
    """
    msg = str(err) or err.__class__.__name__
    m = _PARAM_RE.match(msg)
    param = m.group(1) if m else None
    if param and rename:
        for src, dst in rename.items():
            if param == src:
                msg = dst + msg[len(src):]
                param = dst
                break
    return APIError(400, msg, param)


def from_pydantic(exc: Any) -> APIError:
    """The first pydantic validation error -> 400 naming its field path."""
    errors = exc.errors()
    if not errors:
        return APIError(400, "invalid request body")
    e = errors[0]
    loc = [str(p) for p in e.get("loc", ()) if p not in ("body",)]
    # Drop pydantic's union-branch labels (e.g. "str", "list[...]") from the path.
    # (field names here are snake_case, so a capitalized label is a model branch)
    path = ".".join(p for p in loc if not re.match(
        r"^(str|int|float|bool|list\[.*|dict\[.*|literal\[.*|function-.*|tagged-union.*|[A-Z]\w*)$", p))
    if e.get("type") == "json_invalid":
        return APIError(400, f"request body is not valid JSON: {e.get('msg')}", None)
    if e.get("type") == "model_type" and not path:
        return APIError(400, "request body must be a JSON object", None)
    if e.get("type") == "missing":
        return APIError(400, f"{path}: field required", path)
    if e.get("type") == "extra_forbidden":
        return APIError(400, f"{path}: unknown field; this server does not implement it (see docs/server.md for "
                        "the fields it accepts)", path)
    msg = e.get("msg", "invalid value")
    inp = e.get("input")
    shown = repr(inp) if not isinstance(inp, (dict, list)) else type(inp).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return APIError(400, f"{path or 'body'}: {msg} (got {shown})", path or None)
