"""Reasoning parsers on token streams shaped like each family's real output.

The token pieces below follow each family's tokenizer: the think markers are single
added tokens (Qwen3 <think>=151667, </think>=151668; DeepSeek-R1 likewise; Kimi's
◁think▷ / ◁/think▷), and the families that start inside thinking (DeepSeek-R1, Step3,
Qwen3-Thinking-2507, MiniMax, DeepSeek-V3.1 with thinking=True) never emit the opening
marker because their chat template already put it in the prompt.
"""
from __future__ import annotations

import itertools

import pytest

from sglang.srt.parser.reasoning_parser import FORMATS, ReasoningParser, TokenPhaseTracker, get_format

THINK = ["Okay", ",", " the", " user", " asks", " 2", "+", "2", ".", " That", " is", " 4", ".\n"]
ANSWER = ["The", " answer", " is", " **", "4", "**", "."]


def recorded_stream(family: str) -> tuple[list[str], str, str]:
    """(token pieces, expected reasoning, expected content) for one family's thinking reply."""
    fmt = get_format(family)
    opening = [] if fmt.starts_in_thinking else [fmt.think_start, "\n"]
    lead = [] if fmt.starts_in_thinking else ["\n"]
    tokens = opening + THINK + [fmt.think_end, "\n\n"] + ANSWER
    return tokens, "".join(lead + THINK), "\n\n" + "".join(ANSWER)


def kwargs_for(family: str) -> dict:
    # DeepSeek-V3.1 thinks only when asked to.
    return {"thinking": True} if family == "deepseek-v3" else {}


def stream(parser: ReasoningParser, chunks: list[str]) -> tuple[list[str], list[str]]:
    rs, cs = [], []
    for c in chunks:
        r, t = parser.parse_stream_chunk(c)
        rs.append(r)
        cs.append(t)
    r, t = parser.finish()
    rs.append(r)
    cs.append(t)
    return rs, cs


def test_all_issue_parsers_exist() -> None:
    assert set(FORMATS) == {"qwen3", "qwen3-thinking", "deepseek-r1", "deepseek-v3", "kimi", "glm45", "step3", "minimax"}
    assert get_format("kimi").think_start == "\u25c1think\u25b7"
    for name in ("deepseek-r1", "step3", "qwen3-thinking", "minimax"):
        assert get_format(name).starts_in_thinking
    for name in ("qwen3", "glm45", "kimi"):
        assert not get_format(name).starts_in_thinking
    with pytest.raises(ValueError, match="unknown reasoning parser"):
        get_format("llama")


@pytest.mark.parametrize("family", sorted(FORMATS))
def test_non_stream_split(family: str) -> None:
    tokens, reasoning, content = recorded_stream(family)
    r, c = ReasoningParser(family, chat_template_kwargs=kwargs_for(family)).parse_non_stream("".join(tokens))
    assert r == reasoning
    assert c == content


@pytest.mark.parametrize("family", sorted(FORMATS))
@pytest.mark.parametrize("chunking", ["token", "char", "three"])
def test_stream_equals_non_stream(family: str, chunking: str) -> None:
    tokens, reasoning, content = recorded_stream(family)
    text = "".join(tokens)
    if chunking == "token":
        chunks = tokens
    elif chunking == "char":
        chunks = list(text)  # every marker is split across chunks
    else:
        chunks = [text[i:i + 3] for i in range(0, len(text), 3)]
    rs, cs = stream(ReasoningParser(family, chat_template_kwargs=kwargs_for(family)), chunks)
    assert "".join(rs) == reasoning
    assert "".join(cs) == content
    # No marker text ever leaks into either channel.
    fmt = get_format(family)
    for piece in rs + cs:
        assert fmt.think_end not in piece and fmt.think_start not in piece


def test_end_marker_split_across_chunks_is_held_back() -> None:
    p = ReasoningParser("qwen3")
    assert p.parse_stream_chunk("<think>abc</th") == ("abc", "")
    assert p.in_thinking
    assert p.parse_stream_chunk("ink>Hi") == ("", "Hi")
    assert not p.in_thinking
    assert p.finish() == ("", "")


def test_start_marker_split_across_chunks() -> None:
    p = ReasoningParser("kimi")
    assert p.parse_stream_chunk("\u25c1thi") == ("", "")
    assert p.parse_stream_chunk("nk\u25b7plan") == ("plan", "")
    assert p.parse_stream_chunk("\u25c1/think\u25b7done") == ("", "done")


@pytest.mark.parametrize("family", sorted(FORMATS))
def test_cut_off_inside_thinking(family: str) -> None:
    tokens, reasoning, _ = recorded_stream(family)
    cut = tokens[: tokens.index(get_format(family).think_end)] + ["</th"]  # max_tokens hit mid-marker
    r, c = ReasoningParser(family, chat_template_kwargs=kwargs_for(family)).parse_non_stream("".join(cut))
    assert r == reasoning + "</th"
    assert c == ""
    rs, cs = stream(ReasoningParser(family, chat_template_kwargs=kwargs_for(family)), cut)
    assert "".join(rs) == reasoning + "</th"
    assert "".join(cs) == ""


def test_stream_reasoning_false_sends_reasoning_once() -> None:
    tokens, reasoning, content = recorded_stream("deepseek-r1")
    rs, cs = stream(ReasoningParser("deepseek-r1", stream_reasoning=False), tokens)
    non_empty = [r for r in rs if r]
    assert non_empty == [reasoning]
    assert "".join(cs) == content
    # Cut off inside thinking: the held reasoning comes out at finish().
    rs, cs = stream(ReasoningParser("deepseek-r1", stream_reasoning=False), THINK)
    assert rs[-1] == "".join(THINK) and not any(rs[:-1])


def test_thinking_switched_off() -> None:
    # enable_thinking=False: Qwen3's template puts an empty think pair in the prompt.
    text = "".join(ANSWER)
    assert ReasoningParser("qwen3", chat_template_kwargs={"enable_thinking": False}).parse_non_stream(text) == (None, text)
    # DeepSeek-V3.1 without thinking=True: everything is content, even text after a stray </think>.
    assert ReasoningParser("deepseek-v3").parse_non_stream("a</think>b") == (None, "a</think>b")
    # A hybrid model that chose not to think: no reasoning, content intact.
    assert ReasoningParser("qwen3").parse_non_stream("Hello <think> there") == (None, "Hello <think> there")


def test_tool_call_ends_reasoning_and_stays_in_content() -> None:
    r, c = ReasoningParser("qwen3").parse_non_stream("<think>need a tool<tool_call>{\"name\": 1}</tool_call>")
    assert r == "need a tool"
    assert c.startswith("<tool_call>")


def test_echoed_start_marker_is_stripped() -> None:
    # DeepSeek-R1-0528 repeats <think> although the prompt already opened the block.
    assert ReasoningParser("deepseek-r1").parse_non_stream("<think>\nhmm</think>ok") == ("\nhmm", "ok")


@pytest.mark.parametrize("family", sorted(FORMATS))
def test_token_phases(family: str) -> None:
    tokens, _, _ = recorded_stream(family)
    phases = TokenPhaseTracker(family, kwargs_for(family)).feed(tokens)
    end = tokens.index(get_format(family).think_end)
    assert phases[: end + 1] == ["think"] * (end + 1)  # the closing marker token is still thinking
    assert phases[end + 1:] == ["output"] * (len(tokens) - end - 1)


def test_token_phases_marker_split_over_tokens_and_no_thinking() -> None:
    phases = TokenPhaseTracker("qwen3").feed(["<think>", "a", "</", "think", ">", "\n", "B"])
    assert phases == ["think", "think", "think", "think", "think", "output", "output"]
    assert TokenPhaseTracker("qwen3").feed(["Hi", " <think>", " x"]) == ["output"] * 3
    assert TokenPhaseTracker("deepseek-v3").feed(["a", "</think>", "b"]) == ["output"] * 3
    # Cut off inside thinking: every token is thinking.
    assert TokenPhaseTracker("minimax").feed(THINK) == ["think"] * len(THINK)


def test_phase_count_matches_parser_split_on_every_chunking() -> None:
    """The tokens tagged "think" decode to exactly the reasoning text plus markers."""
    tokens, reasoning, content = recorded_stream("glm45")
    phases = TokenPhaseTracker("glm45").feed(tokens)
    think_text = "".join(t for t, p in zip(tokens, phases) if p == "think")
    out_text = "".join(t for t, p in zip(tokens, phases) if p == "output")
    assert think_text == "<think>" + reasoning + "</think>"
    assert out_text == content
    for a, b in itertools.pairwise(phases):
        assert not (a == "output" and b == "think")  # one think block, then output


def test_token_phases_around_an_implicit_tool_call_end() -> None:
    """A tool-call marker ends thinking implicitly: the token that opens the call is output
    (nothing of it is reasoning); after an explicit end marker in the same token it is not."""
    t = TokenPhaseTracker("qwen3").feed(["<think>", "x", "<tool_call>", "{}"])
    assert t == ["think", "think", "output", "output"]
    assert TokenPhaseTracker("qwen3").feed(["<think>", "x", "</think><tool_call>", "{}"]) == [
        "think", "think", "think", "output"]
    # a marker split over tokens is only known when it completes: the block then closes in a
    # token where the marker did not start, which stays thinking (tokens are never re-tagged)
    assert TokenPhaseTracker("qwen3").feed(["<think>", "x", "<tool", "_call>", "{}"]) == [
        "think", "think", "think", "think", "output"]
