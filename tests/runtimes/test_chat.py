"""Chat templates render in Jinja's sandbox: real templates work, hostile ones cannot reach Python."""
from __future__ import annotations

import pytest

from edgellm.errors import ChatTemplateError
from edgellm.runtimes.chat import render_chat
from tests.fixtures.tiny import CHATML

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_chatml_renders_with_generation_prompt() -> None:
    out = render_chat(CHATML, MSGS)
    assert out == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert not render_chat(CHATML, MSGS, add_generation_prompt=False).endswith("assistant\n")


def test_template_can_raise_exception_as_hf_templates_do() -> None:
    tpl = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}"
    with pytest.raises(ChatTemplateError, match="first message must be from the user"):
        render_chat(tpl, MSGS)


@pytest.mark.parametrize("hostile", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{% set x = messages.append({'role': 'x', 'content': 'y'}) %}{{ messages | length }}",
])
def test_hostile_templates_are_stopped_by_the_sandbox(hostile: str) -> None:
    with pytest.raises(ChatTemplateError):
        render_chat(hostile, MSGS)


def test_malformed_messages_are_rejected() -> None:
    with pytest.raises(ChatTemplateError, match="role"):
        render_chat(CHATML, [{"content": "no role"}])
    with pytest.raises(ChatTemplateError, match="failed to render"):
        render_chat("{% for %}", MSGS)


@pytest.mark.parametrize("messages", [None, "hi", {"role": "user", "content": "x"}, 5, [None], [{"role": "user"}]])
def test_messages_of_the_wrong_shape_are_refused(messages: object) -> None:
    with pytest.raises(ChatTemplateError):
        render_chat(CHATML, messages)  # type: ignore[arg-type]


@pytest.mark.parametrize("template", ["{% include 'x' %}", "{{ 'a' * 10**10 }}", "{% for %}"])
def test_templates_unsafe_to_compile_are_refused_before_rendering(template: str) -> None:
    from edgellm.runtimes.chat import check_template

    with pytest.raises(ChatTemplateError):
        check_template(template)
