"""--attention-mask-system-prompt masks every system message, wherever it sits in the
conversation (the rule: everything up to the end of the last system message)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sglang.srt.entrypoints.openai.serving_chat import ChatTemplate
from sglang.srt.server_args import ServerArgs

SECRET_A = "zebra-alpha secret instructions"
SECRET_B = "quokka-omega hidden policy"


@pytest.fixture(scope="module")
def template(smollm_tokenizer):
    ctx = SimpleNamespace(tm=SimpleNamespace(tokenizer=smollm_tokenizer), server_args=ServerArgs())
    return ChatTemplate(ctx)  # type: ignore[arg-type]


def _mask(template, messages):
    text = template.render(messages, True, False, {})
    ids = template.encode(text)
    return template.system_prompt_len(messages, text, ids, {}), ids


def _visible_text(template, ids, mask):
    return template.ctx.tm.tokenizer.decode(ids[mask:])


def test_leading_system_message(template):
    msgs = [{"role": "system", "content": SECRET_A}, {"role": "user", "content": "hello there"}]
    mask, ids = _mask(template, msgs)
    assert 0 < mask < len(ids)
    assert SECRET_A not in _visible_text(template, ids, mask) and "hello there" in _visible_text(template, ids, mask)


def test_mid_conversation_system_message_is_masked(template):
    msgs = [{"role": "system", "content": SECRET_A}, {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"}, {"role": "system", "content": SECRET_B},
            {"role": "user", "content": "second question"}]
    mask, ids = _mask(template, msgs)
    visible = _visible_text(template, ids, mask)
    for word in ("zebra", "quokka", "hidden", "secret"):
        assert word not in visible
    assert "second question" in visible


def test_no_system_message_masks_nothing(template):
    mask, _ = _mask(template, [{"role": "user", "content": "hi"}])
    assert mask == 0


def test_unrenderable_prefix_masks_the_whole_prompt(template):
    msgs = [{"role": "user", "content": "q"}, {"role": "system", "content": SECRET_B}]
    text = template.render(msgs, True, False, {})
    ids = template.encode(text)
    # a prompt that does not start with the rendered prefix: nothing can be shown safely
    assert template.system_prompt_len(msgs, "X" + text, ids, {}) == len(ids)
