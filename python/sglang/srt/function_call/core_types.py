"""Result types shared by every tool-call detector.

They mirror upstream SGLang's ``core_types`` (``ToolCallItem`` / ``StreamingParseResult``)
so serving code written against upstream reads the same fields, but are plain
dataclasses: the parsers sit on the per-token streaming path and need no validation.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ToolCallItem:
    """One tool call, or one streamed piece of one.

    ``tool_index`` is the position of the call among the calls of this response
    (0, 1, ...), i.e. the OpenAI ``tool_calls[].index``; it is *not* the index of the
    function in the request's ``tools`` list.

    ``parameters`` is the JSON text of the call's arguments. When streaming, the first
    item of a call carries ``name`` and ``parameters == ""`` and later items carry
    ``name is None`` and a fragment of the arguments JSON; the fragments of one
    ``tool_index`` concatenate to the complete arguments JSON (the shape of the OpenAI
    streaming ``delta.tool_calls``: first delta with id/name, then ``arguments`` pieces).
    """

    tool_index: int
    name: str | None = None
    parameters: str = ""


@dataclass
class StreamingParseResult:
    """What one parsing step produced: text for the user and tool-call items."""

    normal_text: str = ""
    calls: list[ToolCallItem] = field(default_factory=list)
