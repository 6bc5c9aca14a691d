"""Each family's chat template (written after the real ones: Llama 3.x, Qwen3 with its thinking switch, Gemma 2 and 3
with raise_exception, Phi-3 and Phi-4-mini, SmolLM3 with reasoning modes and {% generation %}, Granite 3.x with tools
and controls, OLMo 2) renders in edgellm's sandbox exactly as plain jinja2 renders it with the environment
transformers uses (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its tojson,
raise_exception, strftime_now); and the prompt `edgellm run --chat` sends (Model.chat_prompt) is the tokenized
text of that rendering, with the template carried through the GGUF."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edgellm.errors import ChatTemplateError
from edgellm.runtimes.chat import render_chat

# -- the families' templates (after the real ones; shortened where the rest is more of the same) ----------------
LLAMA3 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

QWEN3 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

GEMMA2 = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
          "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
          "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")

GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

PHI3 = ("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
        "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
        "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")

PHI4_MINI = ("{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and "
             "message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + "
             "message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + message['role'] + '|>' + "
             "message['content'] + '<|end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
             "{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}")

SMOLLM3 = """{# defaults #}
{%- if enable_thinking is not defined -%}
{%- set enable_thinking = true -%}
{%- endif -%}
{%- if enable_thinking -%}
  {%- set reasoning_mode = "/think" -%}
{%- else -%}
  {%- set reasoning_mode = "/no_think" -%}
{%- endif -%}
{%- set system_message = "" -%}
{%- set custom_instructions = "" -%}
{{- "<|im_start|>system\\n" -}}
{%- if messages[0].role == "system" -%}
  {%- set system_message = messages[0].content -%}
  {%- if "/no_think" in system_message -%}
    {%- set reasoning_mode = "/no_think" -%}
  {%- elif "/think" in system_message -%}
    {%- set reasoning_mode = "/think" -%}
  {%- endif -%}
  {%- set custom_instructions = system_message.replace("/no_think", "").replace("/think", "").rstrip() -%}
{%- endif -%}
{%- if "/system_override" in system_message -%}
  {{- custom_instructions.replace("/system_override", "").rstrip() -}}
{%- else -%}
  {{- "## Metadata\\n\\n" -}}
  {{- "Knowledge Cutoff Date: June 2025\\n" -}}
  {%- set today = strftime_now("%d %B %Y") -%}
  {{- "Today Date: " ~ today ~ "\\n" -}}
  {{- "Reasoning Mode: " + reasoning_mode + "\\n\\n" -}}
  {{- "## Custom Instructions\\n\\n" -}}
  {%- if custom_instructions -%}
    {{- custom_instructions + "\\n\\n" -}}
  {%- elif reasoning_mode == "/think" -%}
    {{- "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an assistant involves thoroughly exploring questions through a systematic thinking process before providing the final precise and accurate solutions.\\n\\n" -}}
  {%- else -%}
    {{- "You are a helpful AI assistant named SmolLM, trained by Hugging Face.\\n\\n" -}}
  {%- endif -%}
{%- endif -%}
{{- "<|im_end|>\\n" -}}
{%- for message in messages -%}
  {%- set content = message.content if message.content is string else "" -%}
  {%- if message.role == "user" -%}
    {{ "<|im_start|>" + message.role + "\\n" + content + "<|im_end|>\\n" }}
  {%- elif message.role == "assistant" -%}
    {% generation %}
    {%- if reasoning_mode == "/think" -%}
      {{ "<|im_start|>assistant\\n" + content.lstrip("\\n") + "<|im_end|>\\n" }}
    {%- else -%}
      {{ "<|im_start|>assistant\\n" + "<think>\\n\\n</think>\\n" + content.lstrip("\\n") + "<|im_end|>\\n" }}
    {%- endif -%}
    {% endgeneration %}
  {%- elif message.role == "tool" -%}
    {{ "<|im_start|>" + "user\\n" + content + "<|im_end|>\\n" }}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {%- if reasoning_mode == "/think" -%}
    {{ "<|im_start|>assistant\\n" }}
  {%- else -%}
    {{ "<|im_start|>assistant\\n" + "<think>\\n\\n</think>\\n" }}
  {%- endif -%}
{%- endif -%}
"""

GRANITE = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = "Knowledge Cutoff Date: April 2024.\\nToday's Date: " + strftime_now('%B %d, %Y') + ".\\nYou are Granite, developed by IBM." %}
    {%- if tools %}
        {%- set system_message = system_message + " You are a helpful AI assistant with access to the following tools. When a tool is required to answer the user's query, respond with <|tool_call|> followed by a JSON list of tools used. If a tool does not exist in the provided list of tools, notify the user that you do not have the ability to fulfill the request." %}
    {%- endif %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- '<|start_of_role|>system<|end_of_role|>' + system_message + '<|end_of_text|>\\n' }}
{%- if tools %}
    {{- '<|start_of_role|>tools<|end_of_role|>' }}
    {{- tools | tojson(indent=4) }}
    {{- '<|end_of_text|>\\n' }}
{%- endif %}
{%- for message in loop_messages %}
    {{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] + '<|end_of_text|>\\n' }}
    {%- if loop.last and add_generation_prompt %}
        {{- '<|start_of_role|>assistant' }}
        {%- if controls %}
            {{- ' ' + controls | tojson()}}
        {%- endif %}
        {{- '<|end_of_role|>' }}
    {%- endif %}
{%- endfor %}"""

OLMO2 = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\\n' + "
         "message['content'] + '\\n' }}{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + "
         "'\\n' }}{% elif message['role'] == 'assistant' %}{% if not loop.last %}{{ '<|assistant|>\\n'  + "
         "message['content'] + eos_token + '\\n' }}{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}"
         "{% endif %}{% endif %}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
         "{% endfor %}")

# family -> (template, bos text, eos text) as the family's tokenizer_config.json names them
TEMPLATES: dict[str, tuple[str, str, str]] = {
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    "qwen3": (QWEN3, "", "<|im_end|>"),
    "gemma2": (GEMMA2, "<bos>", "<eos>"),
    "gemma3": (GEMMA3, "<bos>", "<eos>"),
    "phi3": (PHI3, "<s>", "<|endoftext|>"),
    "phi4-mini": (PHI4_MINI, "<|endoftext|>", "<|endoftext|>"),
    "smollm3": (SMOLLM3, "", "<|im_end|>"),
    "granite": (GRANITE, "<|end_of_text|>", "<|end_of_text|>"),
    "olmo2": (OLMO2, "<|endoftext|>", "<|endoftext|>"),
}


SYSTEM = {"role": "system", "content": "You are terse. Réponds en français si on te parle français."}
USER = {"role": "user", "content": "What is 2+2? <b>bold</b> & \"quotes\""}
REPLY = {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Météo <actuelle> & prévisions",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]

# (family, messages, template kwargs)
CASES: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = [
    ("llama3", [SYSTEM, USER], {}),
    ("llama3", [USER, REPLY, USER], {"tools": TOOLS, "tools_in_user_message": False}),
    ("qwen3", [SYSTEM, USER], {}),
    ("qwen3", [USER, REPLY, USER], {"enable_thinking": False}),
    ("qwen3", [USER, REPLY, USER], {"enable_thinking": True, "tools": TOOLS}),
    ("qwen3", [USER, {"role": "assistant", "content": "4", "reasoning_content": "sum"},
               {"role": "tool", "content": "{\"ok\": true}"}], {}),
    ("gemma2", [USER, REPLY, USER], {}),
    ("gemma3", [SYSTEM, USER], {}),
    ("gemma3", [{"role": "user", "content": [{"type": "text", "text": " hi "}, {"type": "image"}]}], {}),
    ("phi3", [SYSTEM, USER, REPLY], {"add_generation_prompt": False}),
    ("phi3", [USER], {}),
    ("phi4-mini", [dict(SYSTEM, tools=json.dumps(TOOLS)), USER], {}),
    ("smollm3", [USER, REPLY, USER], {}),
    ("smollm3", [USER], {"enable_thinking": False}),
    ("smollm3", [{"role": "system", "content": "Be kind. /no_think"}, USER], {}),
    ("granite", [USER], {}),
    ("granite", [SYSTEM, USER], {"tools": TOOLS, "controls": {"thinking": True}}),
    ("olmo2", [SYSTEM, USER, REPLY, USER], {}),
]


def hf_render(template: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """transformers' chat-template rendering, with plain jinja2."""
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):        # transformers' AssistantTracker renders the body as is
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        def _render(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    kwargs.setdefault("add_generation_prompt", True)
    return env.from_string(template).render(messages=messages, **kwargs)


def _specials(family: str) -> dict[str, str]:
    return {"bos_token": TEMPLATES[family][1], "eos_token": TEMPLATES[family][2]}


@pytest.mark.parametrize("family,messages,kwargs", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_the_sandbox_renders_what_plain_jinja2_renders(family: str, messages: list[dict[str, Any]],
                                                       kwargs: dict[str, Any]) -> None:
    template = TEMPLATES[family][0]
    want = hf_render(template, messages, **_specials(family), **kwargs)
    got = render_chat(template, messages, **_specials(family), **kwargs)
    assert got == want
    assert len(got) > 20 and "What is 2+2?" in got or family == "gemma3"


def test_thinking_switches_change_the_prompt_as_the_models_expect() -> None:
    q3 = TEMPLATES["qwen3"][0]
    assert render_chat(q3, [USER], enable_thinking=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render_chat(q3, [USER], enable_thinking=True).endswith("<|im_start|>assistant\n")
    # earlier turns' reasoning is dropped, the last turn's kept (Qwen3's history rule)
    two = render_chat(q3, [USER, REPLY, USER, REPLY], add_generation_prompt=False)
    assert two.count("Add them.") == 1
    smol = TEMPLATES["smollm3"][0]
    assert "Reasoning Mode: /no_think" in render_chat(smol, [USER], enable_thinking=False)
    assert "Reasoning Mode: /think" in render_chat(smol, [USER])
    assert render_chat(smol, [USER], enable_thinking=False).endswith("<think>\n\n</think>\n")
    granite = render_chat(TEMPLATES["granite"][0], [USER], controls={"thinking": True})
    assert granite.endswith('<|start_of_role|>assistant {"thinking": true}<|end_of_role|>')


@pytest.mark.parametrize("family,messages,message", [
    ("gemma2", [SYSTEM, USER], "System role not supported"),
    ("gemma2", [USER, USER], "Conversation roles must alternate"),
    ("gemma3", [USER, USER], "Conversation roles must alternate"),
    ("gemma3", [{"role": "user", "content": 42}], "Invalid content type"),
])
def test_gemma_raise_exception_is_a_chat_template_error(family: str, messages: list[dict[str, Any]],
                                                        message: str) -> None:
    import jinja2

    with pytest.raises(jinja2.exceptions.TemplateError, match=message):
        hf_render(TEMPLATES[family][0], messages, **_specials(family))
    with pytest.raises(ChatTemplateError, match=message):
        render_chat(TEMPLATES[family][0], messages, **_specials(family))


def test_tojson_is_transformers_not_jinjas() -> None:
    """Tool schemas reach the prompt as transformers writes them: key order kept, <>&' and accents unescaped."""
    out = render_chat(TEMPLATES["granite"][0], [USER], tools=TOOLS)
    assert '"description": "Météo <actuelle> & prévisions"' in out and out.index('"type"') < out.index('"function"')


@pytest.fixture(scope="module")
def tiny_gguf_with(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from edgellm.converters.gguf import convert_to_gguf
    from tests.converters.test_families import ROWS
    from tests.fixtures.tiny import make_family_model

    root = tmp_path_factory.mktemp("chat")
    folder = make_family_model(root / "hf" / "model", ROWS["qwen3"])
    base = json.loads((folder / "tokenizer_config.json").read_text())

    def build(family: str) -> Path:
        template, bos, eos = TEMPLATES[family]
        # the tiny vocabulary has <|im_start|>, <|im_end|>, <|endoftext|>: bos/eos map onto them
        (folder / "tokenizer_config.json").write_text(json.dumps({**base, "chat_template": template}))
        return convert_to_gguf(folder, root / family, "F32").path.parent

    return build


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_run_chat_prompt_is_the_jinja2_rendering(family: str, tiny_gguf_with: Any) -> None:
    """What `edgellm run --chat PROMPT` sends: Model.chat_prompt([{user: PROMPT}]) on a GGUF that carries the
    family's template equals the plain-jinja2 rendering (with the artifact's bos/eos texts) tokenized."""
    import edgellm

    messages = [{"role": "user", "content": "Hello there"}]
    with edgellm.load(tiny_gguf_with(family), n_ctx=512) as model:
        info = model.runtime.tokenizer_info
        text = hf_render(TEMPLATES[family][0], messages, bos_token=info.bos_text, eos_token=info.eos_text)
        ids = model.runtime.tokenize(text, add_special=False, parse_special=True)
        if info.add_bos and info.bos_id is not None and ids[:1] != [info.bos_id]:
            ids.insert(0, info.bos_id)
        assert model.chat_prompt(messages) == ids


def test_loop_controls_parse_as_in_transformers() -> None:
    """transformers enables jinja2.ext.loopcontrols; templates that `break` out of a scan must render."""
    tpl = ("{%- for m in messages %}{%- if m.role == 'system' %}{{ 'S:' + m.content }}{%- break %}{%- endif %}"
           "{%- endfor %}{%- for m in messages %}{%- if m.role == 'system' %}{%- continue %}{%- endif %}"
           "{{ '|' + m.content }}{%- endfor %}")
    assert render_chat(tpl, [USER, SYSTEM, USER]) == hf_render(tpl, [USER, SYSTEM, USER]) == \
        "S:" + SYSTEM["content"] + ("|" + USER["content"]) * 2


def test_template_kwargs_reach_the_template_and_cannot_shadow_the_standard_variables() -> None:
    q3 = TEMPLATES["qwen3"][0]
    assert render_chat(q3, [USER], template_kwargs={"enable_thinking": False}) == \
        render_chat(q3, [USER], enable_thinking=False) == hf_render(q3, [USER], enable_thinking=False)
    for bad in ({"messages": []}, {"bos_token": "x"}, {"not an identifier": 1}, {1: 2}):
        with pytest.raises(ChatTemplateError, match="template_kwargs"):
            render_chat(q3, [USER], template_kwargs=bad)   # type: ignore[arg-type]  # a wrong type on purpose
    with pytest.raises(ChatTemplateError, match="mapping"):
        render_chat(q3, [USER], template_kwargs=[("enable_thinking", False)])   # type: ignore[arg-type]  # a wrong type on purpose
