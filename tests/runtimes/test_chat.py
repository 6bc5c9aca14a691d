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
        render_chat(CHATML, messages)  # type: ignore[arg-type]  # a wrong type on purpose


@pytest.mark.parametrize("template", ["{% include 'x' %}", "{{ 'a' * 10**10 }}", "{% for %}"])
def test_templates_unsafe_to_compile_are_refused_before_rendering(template: str) -> None:
    from edgellm.runtimes.chat import check_template

    with pytest.raises(ChatTemplateError):
        check_template(template)


# Shapes of widely used templates (tools, namespace, loop.last, tojson with indent, strftime_now, trims).
QWEN_LIKE = """{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}
{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- "\\n\\n# Tools\\n\\n<tools>" }}{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
{{- "\\n</tools><|im_end|>\\n" }}{%- endif %}
{%- for message in messages %}{%- if message.role == "user" or (message.role == "system" and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
{%- elif message.role == "assistant" %}{{- '<|im_start|>' + message.role }}{%- if message.content %}
{{- '\\n' + message.content }}{%- endif %}{{- '<|im_end|>\\n' }}{%- endif %}{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""
LLAMA3_LIKE = """{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}
{%- set messages = messages[1:] %}{%- else %}{%- set system_message = "" %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and tools %}{%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}
{%- endif %}{{- system_message }}{{- "<|eot_id|>" }}{%- for message in messages %}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"""


@pytest.mark.parametrize("template", [QWEN_LIKE, LLAMA3_LIKE])
def test_real_template_shapes_render_and_pass_the_load_check(template: str) -> None:
    from edgellm.runtimes.chat import check_template

    check_template(template)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    out = render_chat(template, MSGS, bos_token="<s>", tools=tools)
    assert "Be brief." in out and "Hi" in out and "get_weather" in out
    assert render_chat(template, MSGS, tools=None).count("Hi") == 1
