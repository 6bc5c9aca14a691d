"""Chat-template payloads (injection, escape, denial of service) and a template mutation fuzzer. Each payload is
rendered directly and as the template of a GGUF and an ONNX artifact through `edgellm.load` + `chat`; each must
render harmlessly or fail with ChatTemplateError within 2 s, with no side effect (inputs unchanged, no file or
environment change)."""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

import edgellm
from edgellm.errors import ChatTemplateError
from edgellm.runtimes.chat import CHATML, check_template, render_chat
from tests.robustness.gguf_seed import rewrite_gguf
from tests.robustness.tally import assert_clean, classify, row

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
RICH = ("{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{% set ns.sys = m['content'] %}{% endif %}{% endfor %}{% if ns.sys %}<|sys|>{{ ns.sys | trim }}\n{% endif %}"
        "{% for m in messages if m['role'] != 'system' %}<|{{ m['role'] }}|>{{ m['content'] | tojson }}"
        "{% if not loop.last %}\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
        "{{ strftime_now('%Y-%m-%d') }}")

PAYLOADS: dict[str, str] = {
    # escapes from the sandbox
    "class_mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals_via_messages": "{{ messages.__class__.__init__.__globals__ }}",
    "cycler_globals": "{{ cycler.__init__.__globals__.os.popen('touch /tmp/edgellm_pwned').read() }}",
    "joiner_globals": "{{ joiner.__init__.__globals__ }}",
    "namespace_globals": "{{ namespace.__init__.__globals__ }}",
    "lipsum_globals": "{{ lipsum.__globals__['os'].system('touch /tmp/edgellm_pwned') }}",
    "raise_exception_globals": "{{ raise_exception.__globals__ }}",
    "strftime_globals": "{{ strftime_now.__globals__ }}",
    "attr_filter": "{{ messages|attr('__class__') }}",
    "map_attribute": "{{ messages|map(attribute='__class__')|list }}",
    "format_attr": "{{ '{0.__class__.__mro__}'.format(messages) }}",
    "percent_format": "{{ '%s' % messages.__class__ }}",
    "self_ref": "{{ self.__init__.__globals__ }}",
    "config": "{{ config }}{{ request }}{{ self._TemplateReference__context }}",
    "getattr_builtins": "{{ range.__self__ }}{{ dict.__subclasses__() }}",
    "mutate_append": "{% set x = messages.append({'role': 'x', 'content': 'y'}) %}{{ messages|length }}",
    "mutate_pop": "{{ messages.pop() }}",
    "mutate_dict": "{% set x = messages[0].update({'role': 'hacked'}) %}",
    "mutate_clear": "{{ messages[0].clear() }}",
    "include": "{% include '/etc/passwd' %}",
    "import": "{% import 'os' as os %}",
    "from_import": "{% from 'x' import y %}",
    "extends": "{% extends 'base' %}",
    # denial of service
    "nested_range_loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "string_doubling_concat": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "string_doubling_plus": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "string_times": "{{ 'a' * 10**10 }}",
    "list_times": "{{ [0] * 10**9 }}",
    "strftime_huge": "{{ strftime_now('%Y' * 200000000) }}",
    "range_huge": "{{ range(10**9) | list | length }}",
    "range_negative_huge": "{{ range(-10**12, 0) | list }}",
    "power_tower": "{{ 9 ** 9 ** 9 }}",
    "power_right": "{{ 9 ** (9 ** 9) }}",
    "constant_join": "{{ ['x' * 1000000] * 1000 | join }}",
    "recursive_macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "exponential_macro": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "recursive_loop": "{% for m in [[[[1]]]] recursive %}{{ loop(m) if m is iterable else m }}{% endfor %}"
                      "{% for i in range(10**6) %}{{ i }}{% endfor %}",
    "center_huge": "{{ 'x' | center(10**9) }}",
    "ljust_huge": "{{ 'x'.ljust(10**9) }}",
    "format_width": "{{ '{:>1000000000}'.format(1) }}",
    "percent_width": "{{ '%1000000000d' % 1 }}",
    "replace_blowup": "{{ ('x' * 100000).replace('', 'y' * 100000) }}",
    "join_blowup": "{% set l = ['x' * 1000000] * 1000 %}{{ l | join }}",
    "indent_huge": "{{ ('x\\n' * 1000) | indent(10**7) }}",
    "lipsum_huge": "{{ lipsum(10**6) }}",
    "batch_huge": "{{ range(10) | batch(10**9) | list }}",
    "deep_parse": "{{" + "(" * 5000 + "1" + ")" * 5000 + "}}",
    "deep_blocks": "{% if 1 %}" * 3000 + "{% endif %}" * 3000,
    "syntax_error": "{% for %}",
    "undefined_chain": "{{ foo.bar.baz() }}",
    "division_by_zero": "{{ 1 / 0 }}",
    "raise_exception": "{{ raise_exception('refused') }}",
    "sort_mixed": "{{ [1, 'a', none] | sort }}",
}
DOS = {k for k in PAYLOADS if list(PAYLOADS).index(k) >= list(PAYLOADS).index("nested_range_loops")}


def _snapshot(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")}


def test_at_least_40_payloads() -> None:
    assert len(PAYLOADS) >= 40


def test_payloads_rendered_directly(tmp_path: Path) -> None:
    env_before, cwd_before = dict(os.environ), _snapshot(tmp_path)
    for name, tpl in PAYLOADS.items():
        msgs = [dict(m) for m in MSGS]
        t0 = time.perf_counter()
        classify("template payloads (direct)", name, lambda: render_chat(tpl, msgs))
        elapsed = time.perf_counter() - t0
        r = row("template payloads (direct)")
        if msgs != MSGS:
            r.escapes += 1
            r.note(f"{name}: changed the messages")
        if name in DOS and elapsed > 2.0:
            r.hangs += 1
            r.note(f"{name}: {elapsed:.2f}s")
    if dict(os.environ) != env_before or _snapshot(tmp_path) != cwd_before or Path("/tmp/edgellm_pwned").exists():
        row("template payloads (direct)").escapes += 1
    assert_clean("template payloads (direct)")


@pytest.fixture(scope="module")
def template_artifacts(seed_gguf: Path, seed_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("tpl")
    out = []
    for name, tpl in PAYLOADS.items():
        out.append(rewrite_gguf(seed_gguf, root / f"{name}.gguf",
                                add={"tokenizer.chat_template": (tpl, __import__("gguf").GGUFValueType.STRING)}))
        folder = root / f"{name}.onnx"
        shutil.copytree(seed_onnx, folder)
        tc = json.loads((folder / "tokenizer_config.json").read_text())
        tc["chat_template"] = tpl
        (folder / "tokenizer_config.json").write_text(json.dumps(tc))
        out.append(folder)
    return out


def _chat(path: Path) -> Any:
    with edgellm.load(path, device="cpu", n_ctx=64, threads=1) as model:
        return model.chat([dict(m) for m in MSGS], max_tokens=2, temperature=0)


def test_payloads_as_artifact_templates_through_load_and_chat(template_artifacts: list[Path]) -> None:
    for path in template_artifacts:
        classify("template payloads (gguf+onnx chat)", path.name, lambda: _chat(path), hang_s=4.0)
    assert_clean("template payloads (gguf+onnx chat)")
    assert not Path("/tmp/edgellm_pwned").exists()


SNIPPETS = ["{{ messages }}", "{% for m in messages %}", "{% endfor %}", "{% if x %}", "{% endif %}", "{{", "}}", "{%",
            "%}", "|tojson", "|length", "~", " * 9", "range(99)", "loop.index", "{% set ns.s = ns.s ~ ns.s %}",
            "(", ")", "'", "\"", "[0]", ".role", "|join(',')", "{{ raise_exception('x') }}", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}"]


def test_template_mutation_fuzz() -> None:
    rng = random.Random(3)
    seeds = [CHATML, RICH]
    for i in range(int(1500 * float(os.environ.get("EDGELLM_FUZZ_SCALE", "1")))):
        tpl = rng.choice(seeds)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(tpl) + 1)
            op = rng.random()
            if op < 0.5:
                tpl = tpl[:at] + rng.choice(SNIPPETS) + tpl[at:]
            elif op < 0.8:
                tpl = tpl[:at] + tpl[at + rng.randint(1, 20):]
            else:
                j = min(len(tpl), at + rng.randint(1, 200))
                tpl = tpl[:at] + tpl[at:j] * rng.randint(2, 6) + tpl[j:]
        classify("template mutants", f"mutant {i}",
                 lambda: (check_template(tpl), render_chat(tpl, MSGS, bos_token="<s>")))
    assert_clean("template mutants")


def test_real_templates_still_render() -> None:
    out = render_chat(RICH, MSGS, bos_token="<s>")
    assert out.startswith("<s><|sys|>Be brief.\n<|user|>\"Hi\"<|assistant|>")
    with pytest.raises(ChatTemplateError, match="refused"):
        render_chat(PAYLOADS["raise_exception"], MSGS)
