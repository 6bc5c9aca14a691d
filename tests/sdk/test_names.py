"""One name per concept (issue 12): context size is n_ctx everywhere, JSON output lands in one dest, sampling
defaults are written once. Old names keep working for one release, with a FutureWarning / a stderr note."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import warnings
from pathlib import Path
from typing import Callable

import pytest

import edgellm
from edgellm.cli import build_parser, main
from edgellm.errors import OptionError
from edgellm.model import Model
from edgellm.runtimes.base import DEFAULT_SAMPLING, OPENAI_SAMPLING, SamplingParams
from edgellm.server_schema import GenerationRequest

PROFILE = "profile:raspberry-pi-5"   # a target profile: planning reads its numbers, measures nothing here


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_plan_context_is_a_deprecated_alias_of_n_ctx(tiny_models: Callable[..., Path]) -> None:
    model = tiny_models()
    new = edgellm.plan(model, device=PROFILE, n_ctx=512)
    with pytest.warns(FutureWarning, match=r"plan\(context=...\) is deprecated; use n_ctx="):
        old = edgellm.plan(model, device=PROFILE, context=512)
    assert new.n_ctx == old.n_ctx == 512
    with pytest.raises(OptionError):
        edgellm.plan(model, device=PROFILE, n_ctx=512, context=512)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the new name warns about nothing
        edgellm.plan(model, device=PROFILE, n_ctx=256)


@pytest.mark.parametrize("command, old", [("run", "--ctx"), ("eval", "--ctx"), ("plan", "--context")])
def test_old_context_flags_store_n_ctx_and_say_so(command: str, old: str, capsys: pytest.CaptureFixture[str]) -> None:
    positional = {"run": ["a.gguf", "hi"], "eval": ["a.gguf"], "plan": ["a.gguf"]}[command]
    parser = build_parser()
    new = parser.parse_args([command, *positional, "--n-ctx", "300"])
    assert new.n_ctx == 300 and "deprecated" not in capsys.readouterr().err
    args = parser.parse_args([command, *positional, old, "300"])
    assert args.n_ctx == 300
    assert f"{old} is deprecated, use --n-ctx" in capsys.readouterr().err
    assert old not in _subparsers()[command].format_help()    # hidden from --help


def test_every_context_flag_is_n_ctx_and_every_json_flag_one_dest() -> None:
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if action.dest in ("n_ctx", "context", "ctx"):
                assert action.dest == "n_ctx", name
                visible = action.help != argparse.SUPPRESS
                assert not visible or action.option_strings == ["--n-ctx"], (name, action.option_strings)
            if "--json" in action.option_strings and name != "bench":   # bench: --json|--csv|--markdown
                assert action.dest == "json_output", (name, action.dest)


def test_plan_cli_json_reports_n_ctx(tiny_models: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(tiny_models()), "--device", PROFILE, "--n-ctx", "256", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_ctx"] == 256


def test_sampling_defaults_are_written_once() -> None:
    fields = {f.name for f in dataclasses.fields(SamplingParams)}
    stream = inspect.signature(Model.stream).parameters
    run = _subparsers()["run"]
    run_defaults = {a.dest: a.default for a in run._actions}
    checked = 0
    for name in fields & set(stream):
        if name in ("stop", "seed", "json_schema"):
            continue
        want = getattr(DEFAULT_SAMPLING, name)
        assert stream[name].default == want, name
        assert run_defaults[name] == want, name
        checked += 1
    assert checked == 6    # max_tokens, temperature, top_k, top_p, min_p, repeat_penalty
    req = GenerationRequest(kind="chat", model="m")
    assert (req.temperature, req.top_p) == (OPENAI_SAMPLING.temperature, OPENAI_SAMPLING.top_p)
