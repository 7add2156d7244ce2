"""Split a model's reasoning ("thinking") from its answer, as text and per token.

Each supported family marks its reasoning with a start and an end marker. Two facts
decide how output is read:

* the markers themselves (``<think>``/``</think>`` for most families, ``◁think▷`` /
  ``◁/think▷`` for Kimi);
* whether the generation starts already inside thinking: DeepSeek-R1, Step3,
  Qwen3-Thinking-2507 and MiniMax put the opening marker in the prompt (or never emit
  it), so everything up to the end marker is reasoning even when no start marker is
  generated. Qwen3 (hybrid), GLM-4.5 and Kimi emit the start marker themselves.
  DeepSeek-V3.1 thinks only when the request passes ``chat_template_kwargs.thinking``;
  its template then opens the thinking block in the prompt.

``ReasoningParser`` offers three views of the same state machine:

* ``parse_non_stream(text)`` -> (reasoning, content) for a whole response;
* ``parse_stream_chunk(delta)`` -> (reasoning_delta, content_delta), holding back any
  text that might be the beginning of a marker split across chunks, and ``finish()``
  to flush what is held back when the stream ends (for example cut off inside
  thinking by ``max_tokens``);
* ``TokenPhaseTracker.feed(token_texts)`` -> "think"/"output" per generated token, so
  attention capture entries can be tagged with the phase of the token they produced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Phase = Literal["think", "output"]


@dataclass(frozen=True)
class ReasoningFormat:
    """How one model family marks reasoning."""

    name: str
    think_start: str
    think_end: str
    # The generation begins inside the thinking block (the chat template opened it).
    starts_in_thinking: bool
    # A marker that ends reasoning implicitly (a tool call opened without closing the
    # thinking block); the marker itself stays in the content.
    tool_start: str | None = None
    # chat_template_kwargs key that switches thinking on or off, and its default.
    thinking_switch: str | None = None
    thinking_default: bool = True


FORMATS: dict[str, ReasoningFormat] = {
    # Qwen3 hybrid models: emit <think> themselves; enable_thinking=False makes the
    # template insert an empty <think></think> pair, so the output has no markers.
    "qwen3": ReasoningFormat("qwen3", "<think>", "</think>", False, "<tool_call>", "enable_thinking", True),
    # Qwen3-*-Thinking-2507: the template ends the prompt with <think>.
    "qwen3-thinking": ReasoningFormat("qwen3-thinking", "<think>", "</think>", True, "<tool_call>"),
    # DeepSeek-R1: the template ends the prompt with <think>\n (R1-0528 may repeat it).
    "deepseek-r1": ReasoningFormat("deepseek-r1", "<think>", "</think>", True),
    # DeepSeek-V3.1: thinking only with chat_template_kwargs {"thinking": true}; the
    # prompt then ends with <think>.
    "deepseek-v3": ReasoningFormat("deepseek-v3", "<think>", "</think>", True, "<tool_calls>", "thinking", False),
    # Kimi (k1.5 / VL thinking): its own markers, emitted by the model.
    "kimi": ReasoningFormat("kimi", "\u25c1think\u25b7", "\u25c1/think\u25b7", False),
    # GLM-4.5/4.6: emits <think>; enable_thinking=False gives an empty pair in the prompt.
    "glm45": ReasoningFormat("glm45", "<think>", "</think>", False, "<tool_call>", "enable_thinking", True),
    # Step3: like DeepSeek-R1, the prompt opens the thinking block.
    "step3": ReasoningFormat("step3", "<think>", "</think>", True),
    # MiniMax-M1/M2: the output starts inside thinking and closes it with </think>.
    "minimax": ReasoningFormat("minimax", "<think>", "</think>", True),
}


def get_format(name: str) -> ReasoningFormat:
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown reasoning parser {name!r}; choose one of {', '.join(FORMATS)}") from None


def thinking_enabled(fmt: ReasoningFormat, chat_template_kwargs: dict[str, Any] | None) -> bool:
    """Whether this request thinks at all (per its chat_template_kwargs)."""
    if fmt.thinking_switch is None:
        return True
    value = (chat_template_kwargs or {}).get(fmt.thinking_switch)
    return fmt.thinking_default if value is None else bool(value)


def _partial_suffix(text: str, markers: list[str]) -> int:
    """Length of the longest suffix of text that is a proper prefix of a marker."""
    best = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), best, -1):
            if text.endswith(m[:n]):
                best = n
                break
    return best


class ReasoningParser:
    """Stateful parser for one response of one request."""

    def __init__(
        self,
        model_type: str,
        stream_reasoning: bool = True,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.fmt = get_format(model_type)
        self.stream_reasoning = stream_reasoning
        # A request with thinking switched off never reasons: every byte is content.
        self.enabled = thinking_enabled(self.fmt, chat_template_kwargs)
        self._in_think = self.enabled and self.fmt.starts_in_thinking
        self._seen_start = False  # a leading start marker is stripped once
        self._done = not self.enabled  # thinking block closed (or never possible)
        self._held = ""  # text that may be the start of a marker
        self._reasoning_started = False  # some reasoning text was already seen
        self._pending_reasoning = ""  # reasoning held while stream_reasoning is False

    # ---- whole response -------------------------------------------------------
    def parse_non_stream(self, text: str) -> tuple[str | None, str]:
        """(reasoning or None, content) for a complete response."""
        r1, c1 = self.parse_stream_chunk(text)
        r2, c2 = self.finish()
        reasoning = r1 + r2
        return (reasoning if (reasoning or self._saw_thinking()) else None), c1 + c2

    def _saw_thinking(self) -> bool:
        return self._seen_start or (self.enabled and self.fmt.starts_in_thinking)

    # ---- streaming ------------------------------------------------------------
    def parse_stream_chunk(self, delta: str) -> tuple[str, str]:
        """(reasoning_delta, content_delta) for newly generated text."""
        text = self._held + delta
        self._held = ""
        reasoning, content = [], []
        fmt = self.fmt
        while text:
            if self._done:
                content.append(text)
                break
            if not self._seen_start and not self._reasoning_started:
                # Only a start marker at the very beginning (after whitespace) opens a
                # thinking block. Models that start inside thinking may echo it too.
                stripped = text.lstrip()
                if not stripped or (fmt.think_start.startswith(stripped) and stripped != fmt.think_start):
                    self._held = text  # could still become the start marker
                    break
                if stripped.startswith(fmt.think_start):
                    self._in_think = True
                    self._seen_start = True
                    text = stripped[len(fmt.think_start):]
                    continue
                if not self._in_think:
                    self._done = True  # the answer has begun without thinking
                    continue
                self._reasoning_started = True
            ends = [m for m in (fmt.think_end, fmt.tool_start) if m]
            idx, marker = self._first(text, ends)
            if idx < 0:
                keep = _partial_suffix(text, ends)
                reasoning.append(text[: len(text) - keep])
                self._held = text[len(text) - keep:]
                self._reasoning_started = True
                break
            reasoning.append(text[:idx])
            self._in_think = False
            self._done = True
            # The end marker is dropped; a tool-call marker belongs to the content.
            text = text[idx + len(marker):] if marker == fmt.think_end else text[idx:]
        return self._emit_reasoning("".join(reasoning)), "".join(content)

    def _emit_reasoning(self, r: str) -> str:
        if self.stream_reasoning:
            return r
        # Reasoning is held back and sent in one piece when the block closes.
        self._pending_reasoning += r
        if self._in_think:
            return ""
        out, self._pending_reasoning = self._pending_reasoning, ""
        return out

    def finish(self) -> tuple[str, str]:
        """Flush held-back text when the response ends (e.g. cut off inside thinking)."""
        held, self._held = self._held, ""
        if not self._in_think:
            return "", held
        self._in_think = False
        # Held text (a partial end marker that never completed) is reasoning.
        reasoning = self._pending_reasoning + held
        self._pending_reasoning = ""
        return reasoning, ""

    @staticmethod
    def _first(text: str, markers: list[str]) -> tuple[int, str]:
        best, which = -1, ""
        for m in markers:
            i = text.find(m)
            if i >= 0 and (best < 0 or i < best):
                best, which = i, m
        return best, which

    @property
    def in_thinking(self) -> bool:
        return self._in_think


class TokenPhaseTracker:
    """Assigns "think" or "output" to each generated token, in order: the token-level view of
    ``ReasoningParser``'s state machine (one machine for text and tokens).

    A token is "think" when it starts inside the thinking block or opens it; the token
    that closes the block (it contains the end marker) is still "think". Marker text
    split across several tokens is matched on the concatenated text. A token whose only
    part in the block is a tool-call marker that ends it implicitly is "output".
    """

    def __init__(self, model_type: str, chat_template_kwargs: dict[str, Any] | None = None) -> None:
        self._parser = ReasoningParser(model_type, True, chat_template_kwargs)

    def feed(self, token_texts: list[str]) -> list[Phase]:
        return [self.feed_one(t) for t in token_texts]

    def feed_one(self, piece: str) -> Phase:
        p = self._parser
        before, held, opened = p.in_thinking, p._held, p._seen_start
        p.parse_stream_chunk(piece)
        if p.in_thinking or p._seen_start != opened:
            return "think"  # inside the block, or this token opened it (and maybe closed it too)
        if not before:
            return "output"
        # This token closed the block. With the end marker it is still thinking; with a
        # tool-call marker (which ends it implicitly) it is output when the marker starts in it.
        text, tool = held + piece, p.fmt.tool_start
        at_tool = text.find(tool) if tool else -1
        at_end = text.find(p.fmt.think_end)
        if at_tool >= len(held) and (at_end < 0 or at_tool < at_end):
            return "output"
        return "think"

    @property
    def in_thinking(self) -> bool:
        return self._parser.in_thinking
