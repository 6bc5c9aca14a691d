"""Chat templates, rendered only in Jinja's immutable sandbox, with bounded work.

A template comes from a stranger's model file, so it is treated as untrusted code: no attribute access to Python
internals, no mutation of the inputs, no `include`/`import`/`extends`, and a budget on everything that can grow:
wall time, steps (calls, filter calls and loop iterations), call depth, the size of any one value a template
builds (string/list repetition and concatenation, `range`, padding widths, `strftime_now` formats) and the
total output. Every failure, from a syntax error to a `1/0` inside the template, is a `ChatTemplateError`.
"""
from __future__ import annotations

import functools
import re
import time
import json
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ..errors import ChatTemplateError

# Used when an artifact carries no template (ChatML, the most common convention).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

MAX_TEMPLATE_CHARS = 1 << 20      # real templates are 1-20 KB
MAX_OUTPUT_CHARS = 4 << 20        # far past any context window; the limit only stops runaway templates
MAX_VALUE = 1 << 20               # one string/list a template builds (repetition, concatenation, padding)
MAX_STEPS = 1_000_000             # calls, filter calls and loop iterations in one render
MAX_DEPTH = 64                    # nested calls (recursive macros)
MAX_INT_ARG = 1 << 20             # an integer argument to a call/filter (width, count) beyond this is refused
MAX_INT_BITS = 4096               # integers a template computes stay below 2^4096
TIME_LIMIT_S = 1.0
_FORBIDDEN_NODES = ("Include", "Import", "FromImport", "Extends")
_WIDE_FORMAT = re.compile(r"%[-+ #0]*(\d{7,}|\*)|\{[^{}]*:[^{}]*\d{7,}")


def _raise(message: str) -> None:
    raise ChatTemplateError(f"the chat template refused the messages: {message}")


class _LimitError(ChatTemplateError):
    """A template went past one of the sandbox's limits (size, steps, depth, time)."""


def _too_big(what: str) -> ChatTemplateError:
    return _LimitError(f"the chat template tried to build {what}; rendering stopped",
                       "the template is broken or hostile; fix it or pass chat_template explicitly")


def _size(obj: Any, cap: int = MAX_VALUE) -> int:
    """Rough size of a value (chars of strings, elements of containers), counted only up to `cap`."""
    if isinstance(obj, (str, bytes)):
        return len(obj)
    if isinstance(obj, (list, tuple, set, frozenset, dict)):
        total = len(obj)
        items = obj.values() if isinstance(obj, dict) else obj
        for item in items:
            if total > cap:
                break
            if isinstance(item, (str, bytes, list, tuple, dict)):
                total += _size(item, cap - total)
        return total
    return 0


class _Budget:
    def __init__(self, time_limit: float, max_value: int = MAX_VALUE) -> None:
        self.max_value = max_value
        self.deadline = time.perf_counter() + time_limit
        self.time_limit = time_limit
        self.steps = 0
        self.depth = 0

    def tick(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_STEPS:
            raise _too_big(f"more than {MAX_STEPS} steps (calls and loop iterations)")
        if time.perf_counter() > self.deadline:
            raise _LimitError(f"the chat template ran longer than {self.time_limit:g} s; rendering stopped",
                              "the template is broken or hostile; fix it or pass chat_template explicitly")


def _check_args(args: Iterable[Any]) -> None:
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_INT_ARG:
            raise _too_big(f"a value from an argument of {a} (more than {MAX_INT_ARG})")
        if isinstance(a, str) and _WIDE_FORMAT.search(a):
            raise _too_big("a format with a field width of a million characters or more")


def _check_result(value: Any, limit: int = MAX_VALUE) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > limit:
        raise _too_big(f"a value of {len(value)} items (more than {limit})")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise _too_big(f"an integer of more than {MAX_INT_BITS} bits")
    return value


def _make_env(budget: _Budget) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**", "+", "%", "//", "/"])

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            budget.tick()
            _check_args(args)
            _check_args(kwargs.values())
            target = getattr(__obj, "__wrapped__", __obj)       # the sandbox wraps str.format
            owner = getattr(target, "__self__", None)
            name = getattr(target, "__name__", "")
            limit = budget.max_value
            if isinstance(owner, str):
                _check_args([owner])       # str.format / format_map widths live in the string itself
                if name == "replace" and len(args) >= 2:
                    hits = len(owner) + 1 if args[0] == "" else owner.count(str(args[0]))
                    if hits * len(str(args[1])) > limit:
                        raise _too_big("a replaced string over the size limit")
                if name == "join" and args and _size(args[0], limit) + len(owner) * _size(args[0], limit) > limit:
                    raise _too_big("a joined string over the size limit")
            if budget.depth >= MAX_DEPTH:
                raise _too_big(f"calls nested deeper than {MAX_DEPTH}")
            budget.depth += 1
            try:
                return _check_result(super().call(__context, __obj, *args, **kwargs), limit)
            finally:
                budget.depth -= 1

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            budget.tick()
            limit = budget.max_value
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > limit:
                        raise _too_big(f"a repeated value of {len(seq)} x {n} items")
            elif operator == "**" and isinstance(left, int) and isinstance(right, int):
                if right > MAX_INT_BITS or abs(left).bit_length() * max(right, 0) > MAX_INT_BITS:
                    raise _too_big(f"the power {left} ** {right}")
            elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                if len(left) + len(right) > limit:
                    raise _too_big("a concatenation over the size limit")
            elif operator == "%" and isinstance(left, str):
                _check_args([left])
            return _check_result(super().call_binop(context, operator, left, right), limit)

    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, autoescape=False,
                         extensions=["jinja2.ext.loopcontrols", _generation_extension()])
    env.filters["tojson"] = _hf_tojson
    for table in (env.filters, env.tests):
        for key, func in list(table.items()):
            table[key] = _bounded(func, budget, key)

    def bounded_range(*args: int) -> _CountedRange:
        return _CountedRange(budget, *args)

    def bounded_iter(value: Any) -> Iterator[Any]:
        for item in value if value is not None else ():
            budget.tick()
            yield item

    def concat(*parts: Any) -> str:
        if sum(len(str(p)) for p in parts) > budget.max_value:
            raise _too_big("a concatenation (~) over the size limit")
        return "".join(str(p) for p in parts)

    def strftime_now(fmt: str) -> str:
        if not isinstance(fmt, str) or len(fmt) > 256:
            raise _too_big("a strftime_now format longer than 256 characters")
        return datetime.now().strftime(fmt)

    env.globals.pop("lipsum", None)   # no chat template needs lorem ipsum; lipsum(n) does n paragraphs of work
    env.globals.update(raise_exception=_raise, strftime_now=strftime_now, range=bounded_range,
                       _edgellm_iter=bounded_iter, _edgellm_concat=concat)
    return env


def _hf_tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' `tojson`: plain json.dumps (no HTML escaping, keys in their order, non-ASCII kept), which
    templates are written against (Jinja's own escapes <>&' and sorts keys)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=1)
def _generation_extension() -> Any:
    """`{% generation %}...{% endgeneration %}` (transformers marks assistant spans with it): renders its body."""
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    return Generation


_JOINING = frozenset(["join", "sum", "tojson", "pprint", "string", "format", "wordwrap", "indent", "center",
                      "urlize", "striptags", "xmlattr", "list", "batch", "slice", "dictsort", "unique"])


def _bounded(func: Callable[..., Any], budget: _Budget, name: str) -> Callable[..., Any]:
    """A filter or test that counts as a step, refuses huge integer arguments (widths, counts) and wide formats,
    and whose result is size-checked. The filtered value itself (after any env/context argument) may be any int."""
    from jinja2.utils import _PassArg

    skip = 1 + (_PassArg.from_obj(func) is not None)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        budget.tick()
        _check_args(args[skip:])
        _check_args(kwargs.values())
        if len(args) >= skip:
            value = args[skip - 1]
            if isinstance(value, str):
                _check_args([value])
            elif name in _JOINING and _size(value, budget.max_value) * 2 > budget.max_value:
                raise _too_big(f"|{name} over a value near the size limit")
        return _check_result(func(*args, **kwargs), budget.max_value)

    return wrapper


class _CountedRange:
    """`range` for templates: len() and indexing as usual, each iteration one step of the budget."""

    def __init__(self, budget: _Budget, *args: int) -> None:
        _check_args(args)
        self.budget, self.r = budget, range(*args)

    def __iter__(self) -> Iterator[int]:
        for i in self.r:
            self.budget.tick()
            yield i

    def __len__(self) -> int:
        return len(self.r)

    def __getitem__(self, i: Any) -> Any:
        return self.r[i]

    def __contains__(self, x: Any) -> bool:
        return x in self.r


def _parse(env: Any, template: str) -> Any:
    """Parse and check a template: size, syntax, no include/import/extends; loops and `~` rewritten to count
    their work. Returns the AST."""
    from jinja2 import TemplateError, nodes

    if not isinstance(template, str):
        raise ChatTemplateError(f"the chat template must be a string, not {type(template).__name__}")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ChatTemplateError(f"the chat template is {len(template)} characters (at most {MAX_TEMPLATE_CHARS})")
    try:
        ast = env.parse(template)
    except (TemplateError, RecursionError, MemoryError, ValueError, TypeError) as exc:
        raise ChatTemplateError(f"the chat template failed to render: it does not parse ({str(exc)[:300]})") from None
    for kind in _FORBIDDEN_NODES:
        found = next(iter(ast.find_all(getattr(nodes, kind))), None)
        if found is not None:
            raise ChatTemplateError(f"the chat template uses {{% {kind.lower()} %}} (line {found.lineno}); "
                                    "chat templates may not load other templates")
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name("_edgellm_iter", "load"), [loop.iter], [], None, None, lineno=loop.lineno)
    for parent in list(ast.find_all(nodes.Node)):
        for field in parent.fields:
            child = getattr(parent, field, None)
            if isinstance(child, nodes.Concat):
                setattr(parent, field, _concat_call(child))
            elif isinstance(child, list):
                setattr(parent, field, [_concat_call(c) if isinstance(c, nodes.Concat) else c for c in child])
    return ast


def _concat_call(node: Any) -> Any:
    from jinja2 import nodes

    return nodes.Call(nodes.Name("_edgellm_concat", "load"), list(node.nodes), [], None, None, lineno=node.lineno)


def check_template(template: str | None) -> None:
    """Refuse (ChatTemplateError) a template that does not parse, loads other templates, or holds a constant
    expression too big to evaluate: Jinja folds constants when it compiles a template (`{{ 'a' * 10**10 }}` is
    computed by `from_string`), and other code (llama-cpp-python compiles a GGUF's templates at load) compiles
    without our limits. Each constant expression is evaluated here first, under the sandbox's limits."""
    if template is None:
        return
    from jinja2 import nodes

    ast = _parse(_make_env(_Budget(TIME_LIMIT_S)), template)
    for expr in _constant_exprs(ast):
        budget = _Budget(TIME_LIMIT_S)
        env = _make_env(budget)
        try:
            env.tests["_edgellm_size"] = _size_probe        # evaluate, never stringify; folded values are
            probe = nodes.Test(expr, "_edgellm_size", [], [], None, None, lineno=1)   # written into code
            code = env.compile(nodes.Template([nodes.Output([probe], lineno=1)], lineno=1))
            env.template_class.from_code(env, code, env.make_globals(None), None).render()
        except _LimitError as exc:
            raise ChatTemplateError(f"the chat template holds a constant expression (line {expr.lineno}) that is "
                                    f"unsafe to compile: {exc.message}") from None
        except Exception:  # noqa: BLE001 - Jinja's own folding skips expressions that fail; so do we
            continue


def _size_probe(value: Any) -> bool:
    """A folded constant is written into the compiled template's source: its whole size must stay bounded."""
    if _size(value, MAX_VALUE) > MAX_VALUE:
        raise _too_big("a constant too large to compile into code")
    return True


def _constant_exprs(node: Any) -> Iterator[Any]:
    """The outermost expressions built only from literals (what Jinja's optimizer folds at compile time)."""
    from jinja2 import nodes

    refs = (nodes.Name, nodes.ContextReference, nodes.DerivedContextReference, nodes.InternalName,
            nodes.ImportedName, nodes.NSRef, nodes.ExtensionAttribute)
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.Expr) and not isinstance(child, (nodes.Const, nodes.TemplateData)) and \
                not isinstance(child, refs) and next(iter(child.find_all(refs)), None) is None:
            yield child
        else:
            yield from _constant_exprs(child)


_RESERVED = frozenset(["messages", "bos_token", "eos_token", "add_generation_prompt", "time_limit", "template_kwargs"])


def render_chat(template: str | None, messages: Sequence[Mapping[str, Any]], *, bos_token: str = "",
                eos_token: str = "", add_generation_prompt: bool = True, time_limit: float = TIME_LIMIT_S,
                template_kwargs: Mapping[str, Any] | None = None, **extra: Any) -> str:
    """Render `messages` with the model's template in the bounded sandbox (see the module docstring).

    Template variables beyond the standard ones (Qwen3's and SmolLM3's `enable_thinking`, Granite's `controls`,
    `tools`, `documents`, ...) come as keyword arguments or as `template_kwargs` (a user's mapping: names are
    checked, the standard variables cannot be overridden through it)."""
    from jinja2 import TemplateError

    if template_kwargs is not None:
        if not isinstance(template_kwargs, Mapping):
            raise ChatTemplateError(f"template_kwargs must be a mapping, not {type(template_kwargs).__name__}")
        for key in template_kwargs:
            if not isinstance(key, str) or not key.isidentifier() or key in _RESERVED or key in extra:
                raise ChatTemplateError(f"template variable {str(key)[:40]!r} cannot be set through template_kwargs",
                                        "use an identifier other than messages, bos_token, eos_token, "
                                        "add_generation_prompt (pass add_generation_prompt as its own argument)")
        extra = {**extra, **template_kwargs}

    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ChatTemplateError(f"messages must be a list of {{'role', 'content'}} mappings, not "
                                f"{type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ChatTemplateError(f"message {i} must be a mapping with 'role' and 'content', got {str(m)[:80]}")
    inputs = sum(_size(dict(m), MAX_OUTPUT_CHARS) for m in messages)
    budget = _Budget(time_limit, MAX_VALUE + 4 * inputs)
    env = _make_env(budget)
    ast = _parse(env, template or CHATML)
    limit = MAX_OUTPUT_CHARS + 4 * inputs
    try:
        tpl = env.template_class.from_code(env, env.compile(ast), env.make_globals(None), None)
        out, total = [], 0
        for chunk in tpl.generate(messages=[dict(m) for m in messages], bos_token=bos_token, eos_token=eos_token,
                                  add_generation_prompt=add_generation_prompt, **extra):
            total += len(chunk)
            if total > limit:
                raise _too_big(f"more than {limit} characters of output")
            budget.tick()
            out.append(chunk)
        return "".join(out)
    except ChatTemplateError:
        raise
    except TemplateError as exc:
        raise ChatTemplateError(f"the chat template failed to render: {str(exc)[:300]}") from None
    except RecursionError:
        raise _too_big("recursion deeper than Python allows") from None
    except MemoryError:
        raise _too_big("more memory than is available") from None
    except Exception as exc:  # noqa: BLE001 - the template is untrusted code: any error it raises is its own
        raise ChatTemplateError(f"the chat template failed to render: {type(exc).__name__}: {str(exc)[:300]}") from None
