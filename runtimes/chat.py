"""Chat templates, rendered only in Jinja's immutable sandbox."""
from __future__ import annotations

from datetime import date
from typing import Any, Mapping, Sequence

from ..errors import ChatTemplateError

# Used when an artifact carries no template (ChatML, the most common convention).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _raise(message: str) -> None:
    raise ChatTemplateError(f"the chat template refused the messages: {message}")


def render_chat(template: str | None, messages: Sequence[Mapping[str, Any]], *, bos_token: str = "",
                eos_token: str = "", add_generation_prompt: bool = True, **extra: Any) -> str:
    """Render `messages` with the model's template in a sandbox (no attribute access to Python internals,
    no mutation of the inputs)."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ChatTemplateError(f"message {i} must be a mapping with 'role' and 'content', got {m!r}")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: date.today().strftime(fmt)
    try:
        tpl = env.from_string(template or CHATML)
        return tpl.render(messages=[dict(m) for m in messages], bos_token=bos_token, eos_token=eos_token,
                          add_generation_prompt=add_generation_prompt, **extra)
    except ChatTemplateError:
        raise
    except TemplateError as exc:
        raise ChatTemplateError(f"the chat template failed to render: {exc}") from None
