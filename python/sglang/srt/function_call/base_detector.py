"""The shared tool-call state machine that every JSON-based format is built on.

The formats this package reads (Llama 3 JSON, Qwen 2.5/3 ``<tool_call>``, Mistral
``[TOOL_CALLS]``, a bare JSON array from constrained decoding) all have the same
structure, only with different literals::

    normal text  START  OPEN  call (SEP call)*  CLOSE  normal text ...

where ``call`` is a JSON object ``{"name": ..., "parameters"|"arguments": {...}}``.
A subclass describes its literals with a few class attributes and the base class does
the rest. Keeping a single machine for both views is deliberate: ``detect_and_parse``
(whole output) runs the very same machine as ``parse_streaming_increment`` (token by
token), so the two can only disagree where the model's output is malformed (see
below), never in how text is split into content and calls.

Streaming rules, chosen so the result does not depend on how the text is chunked:

* Normal text is released as soon as it cannot be the beginning of a start marker.
  Whitespace that only pads tool calls is dropped (upstream ``strip()``s the content
  around calls): whitespace just before a start marker, whitespace after a region
  when no content precedes it or none follows it. Whitespace between a region and
  content on both sides is kept, so ``A\n<call>\nB`` gives ``A\nB``. To decide this
  the same way for every chunking, trailing whitespace of normal text is held until a
  non-space character (or the end of the stream) shows what it is next to.
* A call is announced with ``ToolCallItem(index, name, "")`` and its arguments then
  stream as raw JSON text fragments whose concatenation is exactly the arguments
  value. The raw value is streamed only when the object starts with the ``name`` key
  followed by the arguments key and the arguments are a JSON object (what models
  emit); otherwise the object is buffered and its arguments are sent in one piece
  once it is complete. A small scanner that tracks strings, escapes and bracket depth
  finds the end of the arguments object, so nothing beyond it is ever emitted.
* A call that names a function missing from ``tools`` is dropped (logged), before any
  part of it is emitted; ``tool_index`` counts only kept calls.

Malformed output: streamed argument text cannot be taken back, so a call whose JSON
turns out invalid after its arguments were streamed stays in the stream (with a
warning) while ``detect_and_parse`` drops it. Text where a call was expected but that
is not JSON falls back to normal text; a call cut off by the end of the output is
dropped (its streamed part stays streamed).
"""
from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sglang.srt.function_call.core_types import StreamingParseResult, ToolCallItem

logger = logging.getLogger(__name__)

# Tools are OpenAI-shaped dicts: {"type": "function", "function": {"name", "description",
# "parameters"}}. Objects with the same attributes (e.g. pydantic models) are accepted too.
ToolSpec = Mapping[str, Any]


def _field(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def tool_function_name(tool: Any) -> str | None:
    """The function name of an OpenAI-shaped tool (dict or attribute object)."""
    name = _field(_field(tool, "function"), "name")
    return name if isinstance(name, str) else None


def tool_parameters_schema(tool: Any) -> dict[str, Any] | None:
    """The JSON schema of a tool's arguments, or None when the tool declares none."""
    params = _field(_field(tool, "function"), "parameters")
    return dict(params) if isinstance(params, Mapping) else None


def tool_names(tools: Sequence[Any]) -> set[str]:
    return {name for name in (tool_function_name(t) for t in tools) if name}


def arguments_of(call: Mapping[str, Any]) -> Any:
    """The arguments value of a parsed call object.

    Llama 3 writes ``parameters``, the others ``arguments``; both are accepted. A
    missing or null value means no arguments. Arguments given as a JSON *string*
    holding an object (OpenAI's own wire shape, which some models copy) are decoded
    so that the emitted JSON is the object, not a string.
    """
    if "parameters" in call:
        args = call["parameters"]
    else:
        args = call.get("arguments")
    if args is None:
        return {}
    if isinstance(args, str):
        try:
            decoded = json.loads(args)
        except ValueError:
            return args
        if isinstance(decoded, dict):
            return decoded
    return args


def dump_arguments(args: Any) -> str:
    # ensure_ascii=False: upstream does the same, and clients get the text as written.
    return json.dumps(args, ensure_ascii=False)


@dataclass
class _JsonScanner:
    """Tracks bracket depth of JSON text fed one character at a time.

    It does not validate JSON (``json.loads`` does that once the value is complete);
    it only has to know, reliably, where a value that starts with ``{`` or ``[`` ends,
    which requires ignoring brackets inside strings (and escaped quotes in them).
    """

    depth: int = 0
    in_string: bool = False
    escaped: bool = False

    def feed(self, c: str) -> None:
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif c == "\\":
                self.escaped = True
            elif c == '"':
                self.in_string = False
        elif c == '"':
            self.in_string = True
        elif c == "{" or c == "[":
            self.depth += 1
        elif c == "}" or c == "]":
            self.depth -= 1


class _State(enum.Enum):
    NORMAL = "normal"  # plain text, watching for a start marker
    EXPECT_OPEN = "expect_open"  # after a start marker, before the OPEN literal
    EXPECT_CALL = "expect_call"  # a call object (or CLOSE) comes next
    IN_CALL = "in_call"  # inside a call object
    AFTER_CALL = "after_call"  # a call ended: SEP, CLOSE, or the region is over


class _CallMode(enum.Enum):
    UNDECIDED = "undecided"  # the object's first nested value has not started yet
    STREAM = "stream"  # {"name": known, "arguments": {...: arguments stream raw
    SKIP = "skip"  # {"name": unknown, ...: consumed silently
    BUFFER = "buffer"  # any other shape: parsed and emitted whole when complete


# The object prefix that allows streaming the arguments raw: name first, then the
# arguments key, then the opening brace of the arguments object.
_STREAMABLE_PREFIX = re.compile(
    r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(parameters|arguments)"\s*:\s*\{'
)


@dataclass
class _ParseState:
    """Everything one response's parse needs; a fresh one per response."""

    state: _State = _State.NORMAL
    buf: str = ""  # text received but not yet consumed
    at_start: bool = True  # nothing but whitespace has been seen so far
    skip_ws: bool = False  # drop whitespace that follows a region (no content yet)
    emitted_text: bool = False  # some normal text has been released
    after_region: bool = False  # no normal text released since the last region ended
    region_implicit: bool = False  # the current region opened without a start marker
    leading_ws: str = ""  # whitespace dropped before an implicit region
    calls_in_region: int = 0  # call objects completed in the current region
    next_index: int = 0  # tool_index of the next announced call
    # the call object being read
    obj: str = ""
    scanner: _JsonScanner = field(default_factory=_JsonScanner)
    mode: _CallMode = _CallMode.UNDECIDED
    call_index: int = -1
    call_name: str = ""
    args_key: str = ""
    args_scanner: _JsonScanner = field(default_factory=_JsonScanner)
    args_done: bool = False
    # complete, valid calls, with canonical arguments JSON (for detect_and_parse)
    complete_calls: list[ToolCallItem] = field(default_factory=list)


class _Output:
    """Collects one step's normal text and call items (fragments of a call merged)."""

    def __init__(self) -> None:
        self.normal: list[str] = []
        self.calls: list[ToolCallItem] = []

    def text(self, s: str) -> None:
        if s:
            self.normal.append(s)

    def announce(self, index: int, name: str) -> None:
        self.calls.append(ToolCallItem(tool_index=index, name=name, parameters=""))

    def arguments(self, index: int, fragment: str) -> None:
        if not fragment:
            return
        last = self.calls[-1] if self.calls else None
        if last is not None and last.tool_index == index and last.name is None:
            last.parameters += fragment
        else:
            self.calls.append(ToolCallItem(tool_index=index, name=None, parameters=fragment))

    def result(self) -> StreamingParseResult:
        return StreamingParseResult(normal_text="".join(self.normal), calls=self.calls)


class BaseFormatDetector:
    """Reads one model family's tool-call syntax, whole or streamed.

    Subclasses set the literals of their format:

    * ``start_markers``: text that opens a tool-call region (e.g. ``<tool_call>``).
    * ``region_open``: literal that must follow the start marker (Mistral's ``[``).
    * ``call_separator``: literal between two calls of one region (``;``, ``,``), or
      None when a region holds one call.
    * ``region_close``: literal that ends a region (``</tool_call>``, ``]``), or None
      when a region simply ends where the calls stop (Llama 3).
    * ``implicit_start``: a region may also open without a marker, when the output's
      first non-space character is ``region_open`` (or ``{`` when there is none).

    One instance holds the streaming state of one response; ``detect_and_parse`` uses
    its own fresh state and can be called at any time.
    """

    start_markers: ClassVar[tuple[str, ...]] = ()
    region_open: ClassVar[str] = ""
    call_separator: ClassVar[str | None] = None
    region_close: ClassVar[str | None] = None
    implicit_start: ClassVar[bool] = False

    def __init__(self) -> None:
        self._state = _ParseState()

    # ---- public API ------------------------------------------------------------
    def has_tool_call(self, text: str) -> bool:
        """Whether the text contains (the start of) a tool call in this format."""
        if any(m in text for m in self.start_markers):
            return True
        return self.implicit_start and text.lstrip().startswith(self._implicit_opener())

    def detect_and_parse(self, text: str, tools: Sequence[Any]) -> StreamingParseResult:
        """Parse a complete output: its normal text and its complete, valid calls.

        Calls carry canonical arguments JSON (``json.dumps``) and are numbered 0..n-1.
        """
        state = _ParseState()
        names = tool_names(tools)
        first = self._feed(state, text, names)
        last = self._finish(state)
        calls = [
            ToolCallItem(tool_index=i, name=c.name, parameters=c.parameters)
            for i, c in enumerate(state.complete_calls)
        ]
        return StreamingParseResult(normal_text=first.normal_text + last.normal_text, calls=calls)

    def parse_streaming_increment(self, new_text: str, tools: Sequence[Any]) -> StreamingParseResult:
        """Feed newly generated text; returns what can be released now."""
        return self._feed(self._state, new_text, tool_names(tools))

    def finish(self, tools: Sequence[Any] | None = None) -> StreamingParseResult:
        """End of the stream: release held-back normal text and reset the state.

        Text held because it might have begun a marker (or trailing whitespace) is
        normal text after all. ``tools`` is accepted for symmetry with upstream.
        """
        result = self._finish(self._state)
        self._state = _ParseState()
        return result

    # ---- the machine -------------------------------------------------------------
    def _implicit_opener(self) -> str:
        return self.region_open[:1] or "{"

    def _feed(self, st: _ParseState, text: str, names: set[str]) -> StreamingParseResult:
        st.buf += text
        out = _Output()
        while self._step(st, names, out):
            pass
        return out.result()

    def _step(self, st: _ParseState, names: set[str], out: _Output) -> bool:
        """Advance the machine once; False when it needs more text to continue."""
        if st.state is _State.NORMAL:
            return self._step_normal(st, out)
        if st.state is _State.IN_CALL:
            return self._step_in_call(st, names, out)
        # Whitespace between the literals of a region is insignificant. It stays in the
        # buffer until the next literal shows up, because if the region turns out to be
        # over (Llama 3 has no closing literal) it separates normal text.
        rest = st.buf.lstrip()
        if not rest:
            return False
        if st.state is _State.EXPECT_OPEN:
            return self._expect_literals(st, rest, [(self.region_open, _State.EXPECT_CALL)])
        if st.state is _State.EXPECT_CALL:
            if rest[0] == "{":
                st.buf = rest
                self._begin_call(st)
                return True
            return self._expect_literals(st, rest, [(self.region_close, None)])
        # AFTER_CALL
        return self._expect_literals(
            st, rest, [(self.call_separator, _State.EXPECT_CALL), (self.region_close, None)]
        )

    def _expect_literals(
        self, st: _ParseState, rest: str, options: list[tuple[str | None, _State | None]]
    ) -> bool:
        """Consume one of the expected literals at the start of ``rest`` (the buffer
        without leading whitespace); next state None means the region ends there.

        Waits while ``rest`` is a prefix of one; otherwise the region is over and the
        text is normal text again (for formats without a closing literal this is the
        regular end of a region, for the others the output was malformed).
        """
        for literal, next_state in options:
            if literal and rest.startswith(literal):
                st.buf = rest[len(literal):]
                if next_state is None:
                    self._end_region(st)
                else:
                    st.state = next_state
                return True
        if any(literal and literal.startswith(rest) for literal, _ in options):
            return False
        self._end_region(st)
        return True

    def _end_region(self, st: _ParseState) -> None:
        """Back to normal text. Whitespace after a region separates it from earlier
        content, so it is kept only if content was released before and more follows."""
        st.state = _State.NORMAL
        st.skip_ws = not st.emitted_text
        st.after_region = True
        st.region_implicit = False
        st.calls_in_region = 0

    def _begin_region(self, st: _ParseState, implicit: bool) -> None:
        st.state = _State.EXPECT_OPEN if self.region_open else _State.EXPECT_CALL
        st.region_implicit = implicit
        st.calls_in_region = 0

    def _step_normal(self, st: _ParseState, out: _Output) -> bool:
        if st.skip_ws:
            st.buf = st.buf.lstrip()
            if not st.buf:
                return False
            st.skip_ws = False
        if st.at_start and self.implicit_start:
            stripped = st.buf.lstrip()
            if not stripped:
                return False  # only whitespace so far: a call may still follow
            st.at_start = False
            if stripped.startswith(self._implicit_opener()):
                st.leading_ws = st.buf[: len(st.buf) - len(stripped)]
                st.buf = stripped
                self._begin_region(st, implicit=True)
                return True
        idx, marker = self._find_marker(st.buf)
        if marker:
            st.at_start = False
            before = st.buf[:idx].rstrip()  # whitespace before a call is not content
            if before:
                st.emitted_text = True
            out.text(before)
            st.buf = st.buf[idx + len(marker):]
            self._begin_region(st, implicit=False)
            return True
        held = self._partial_marker_len(st.buf)
        release = st.buf[: len(st.buf) - held].rstrip()
        if release:
            st.at_start = False
            st.emitted_text = True
            st.after_region = False
            out.text(release)
            st.buf = st.buf[len(release):]
        return False

    def _find_marker(self, text: str) -> tuple[int, str]:
        best, which = -1, ""
        for m in self.start_markers:
            i = text.find(m)
            if i >= 0 and (best < 0 or i < best or (i == best and len(m) > len(which))):
                best, which = i, m
        return best, which

    def _partial_marker_len(self, text: str) -> int:
        """Length of the longest suffix of text that is a proper prefix of a marker."""
        best = 0
        for m in self.start_markers:
            for n in range(min(len(m) - 1, len(text)), best, -1):
                if text.endswith(m[:n]):
                    best = n
                    break
        return best

    # ---- one call object -----------------------------------------------------------
    def _begin_call(self, st: _ParseState) -> None:
        st.state = _State.IN_CALL
        st.obj = ""
        st.scanner = _JsonScanner()
        st.mode = _CallMode.UNDECIDED
        st.call_index = -1
        st.call_name = ""
        st.args_key = ""
        st.args_scanner = _JsonScanner()
        st.args_done = False

    def _step_in_call(self, st: _ParseState, names: set[str], out: _Output) -> bool:
        buf = st.buf
        args_from = -1  # start in buf of the arguments text to emit in this step
        i = 0
        complete = False
        while i < len(buf):
            c = buf[i]
            i += 1
            st.scanner.feed(c)
            if st.mode is _CallMode.UNDECIDED and c in "{[" and not st.scanner.in_string and st.scanner.depth == 2:
                # The first nested value begins: decide how this call is read.
                self._decide(st, st.obj + buf[:i], names, out)
                if st.mode is _CallMode.STREAM:
                    st.args_scanner.feed(c)
                    args_from = i - 1
                continue
            if st.mode is _CallMode.STREAM and not st.args_done:
                if args_from < 0:
                    args_from = i - 1
                st.args_scanner.feed(c)
                if st.args_scanner.depth == 0:
                    st.args_done = True
                    out.arguments(st.call_index, buf[args_from:i])
                    args_from = -1
            if st.scanner.depth == 0:
                complete = True
                break
        if args_from >= 0:
            out.arguments(st.call_index, buf[args_from:i])
        st.obj += buf[:i]
        st.buf = buf[i:]
        if complete:
            self._complete_call(st, names, out)
            return True
        return False

    def _decide(self, st: _ParseState, prefix: str, names: set[str], out: _Output) -> None:
        match = _STREAMABLE_PREFIX.fullmatch(prefix)
        if match is None:
            st.mode = _CallMode.BUFFER
            return
        try:
            name = json.loads('"' + match.group(1) + '"')
        except ValueError:
            st.mode = _CallMode.BUFFER
            return
        if name not in names:
            logger.warning("Model attempted to call undefined function: %s", name)
            st.mode = _CallMode.SKIP
            return
        st.mode = _CallMode.STREAM
        st.call_name = name
        st.args_key = match.group(2)
        st.call_index = st.next_index
        st.next_index += 1
        out.announce(st.call_index, name)

    def _complete_call(self, st: _ParseState, names: set[str], out: _Output) -> None:
        text = st.obj
        try:
            obj: Any = json.loads(text)
        except ValueError:
            obj = None
        is_call = isinstance(obj, dict) and isinstance(obj.get("name"), str)
        st.state = _State.AFTER_CALL
        first_of_implicit = st.region_implicit and st.calls_in_region == 0 and not self.region_open
        st.calls_in_region += 1

        if st.mode is _CallMode.STREAM:
            if is_call and isinstance(obj, dict):
                st.complete_calls.append(
                    ToolCallItem(st.call_index, st.call_name, dump_arguments(obj[st.args_key]))
                )
            else:
                logger.warning("Tool call %r was streamed but is not valid JSON: %r", st.call_name, text)
            return
        if st.mode is _CallMode.SKIP:
            return
        if not is_call and first_of_implicit:
            # Output that merely starts with a JSON object that is not a call (e.g. a
            # JSON answer): it is content, including the whitespace set aside before it.
            out.text(st.leading_ws + text)
            self._end_region(st)
            st.skip_ws = False
            st.after_region = False
            st.emitted_text = True
            return
        if not is_call or not isinstance(obj, dict):
            logger.warning("Ignoring malformed tool call: %r", text)
            return
        name = obj["name"]
        if name not in names:
            logger.warning("Model attempted to call undefined function: %s", name)
            return
        index = st.next_index
        st.next_index += 1
        arguments = dump_arguments(arguments_of(obj))
        out.announce(index, name)
        out.arguments(index, arguments)
        st.complete_calls.append(ToolCallItem(index, name, arguments))

    def _finish(self, st: _ParseState) -> StreamingParseResult:
        out = _Output()
        if st.state is _State.NORMAL:
            text = st.buf.lstrip() if st.skip_ws else st.buf
            if st.after_region and not text.strip():
                text = ""  # whitespace after the last region is not content
            out.text(text)
        elif st.state is _State.IN_CALL:
            if (
                st.mode in (_CallMode.UNDECIDED, _CallMode.BUFFER)
                and st.region_implicit
                and st.calls_in_region == 0
                and not self.region_open
            ):
                # Cut off before it could be read as a call: it is content (upstream keeps
                # unparsable text after the tool-call prefix as normal text as well).
                out.text(st.leading_ws + st.obj + st.buf)
            else:
                logger.warning("Dropping tool call cut off by the end of the output: %r", st.obj)
        st.buf = ""
        return out.result()
