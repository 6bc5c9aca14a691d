"""CLI = library (issue 12): every option of every subcommand is a same-named parameter of the public function
the subcommand is a parser over, so the two cannot drift apart. Options only a terminal needs are declared here."""
from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any, Callable

import pytest

import edgellm
from edgellm.cli import build_parser
from edgellm.commands.info import describe
from edgellm.converters.gguf import convert_to_gguf
from edgellm.errors import OptionError
from edgellm.model import Model

onnx = pytest.importorskip("edgellm.converters.onnx")
from edgellm.edge_image import edge_image  # noqa: E402

# subcommand -> the public functions whose parameters its options are (convert's options go to a converter)
PUBLIC: dict[str, tuple[Callable[..., Any], ...]] = {
    "convert": (edgellm.convert, convert_to_gguf, onnx.convert_to_onnx, edgellm.autoquant),
    "run": (edgellm.load, Model.stream, Model.chat_prompt),
    "info": (describe,),
    "unpack": (edgellm.unpack,),
    "plan": (edgellm.plan,),
    "autoquant": (edgellm.autoquant,),
    "prune": (edgellm.prune,),
    "bundle": (edgellm.bundle,),
    "bench": (edgellm.bench,),
    "eval": (edgellm.evaluate,),
    "serve": (edgellm.serve,),
    "image": (edge_image,),
}
# options a terminal needs and a library call does not (output shape, files to read, sugar); and why
CLI_ONLY: dict[str, set[str]] = {
    "*": {"json_output"},                                    # print JSON instead of a table
    "convert": {"prune_layers"},                             # convert then prune(layers=...) in one command
    "run": {"chat", "enable_thinking"},                      # chat: Model.chat_stream; --no-think: template_kwargs
    "autoquant": {"text_file"}, "prune": {"text_file"},      # text= read from a file
    "bench": {"output_format", "output", "report", "no_progress"},
    "eval": {"models", "text_file", "markdown"},             # evaluate() once per model; text= from a file
    "devices": {"profiles", "probe"},                        # a report of this host; no library call to mirror
    "demo": {"prompt", "quant", "max_tokens", "threads"},  # the first-run demo: builds and runs the default model
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _params(command: str) -> set[str]:
    return {name for fn in PUBLIC.get(command, ()) for name in inspect.signature(fn).parameters}


def test_every_cli_option_is_a_parameter_of_its_public_function() -> None:
    drift, checked = [], 0
    commands = _subparsers()
    assert {"prune", "autoquant"} <= set(commands)
    for name, sub in commands.items():
        allowed = _params(name) | CLI_ONLY["*"] | CLI_ONLY.get(name, set())
        for action in sub._actions:
            if action.dest in ("help", "verbose") or action.dest == argparse.SUPPRESS:
                continue
            checked += 1
            if action.dest not in allowed:
                drift.append(f"edgellm {name}: {action.option_strings or action.dest} -> {action.dest}")
    assert checked > 100
    assert not drift, "CLI options with no same-named library parameter:\n" + "\n".join(drift)


def test_the_drift_check_would_catch_a_renamed_option() -> None:
    assert "n_ctx" in _params("plan") and "context" not in _params("bench")
    assert "layers" in _params("prune") and "formats" in _params("autoquant")


@pytest.mark.parametrize("value, want", [("1,2", (1, 2)), ([1, 2], (1, 2)), (2, (2,)), ("4", (4,))])
def test_bench_lists_take_the_cli_string_or_python_lists(value: object, want: tuple[int, ...]) -> None:
    from edgellm.benchmark import int_list

    assert int_list("threads", value) == want   # type: ignore[arg-type]  # the CLI's str and Python's list both


@pytest.mark.parametrize("value", ["x", "1,y", [1.5], [True], -1, ""])
def test_bench_lists_refuse_what_is_not_whole_numbers(value: object) -> None:
    from edgellm.benchmark import int_list

    with pytest.raises(OptionError):
        int_list("threads", value)                   # type: ignore[arg-type]  # the wrong type is the test


def test_prune_and_autoquant_subcommands_parse_to_their_functions() -> None:
    parser = build_parser()
    p = parser.parse_args(["prune", "m.gguf", "out", "--layers", "4,7", "--max-kld", "0.05"])
    assert p.layers == [4, 7] and p.max_kld == 0.05 and p.func.__name__ == "run_prune"
    assert parser.parse_args(["prune", "m.gguf", "out", "--layers", "3"]).layers == 3
    a = parser.parse_args(["autoquant", "hf", "out", "--formats", "gguf,onnx", "--candidates", "Q4_K_M,Q8_0"])
    assert a.formats == ["gguf", "onnx"] and a.candidates == ["Q4_K_M", "Q8_0"] and a.func.__name__ == "run_autoquant"
    with pytest.raises(SystemExit):
        parser.parse_args(["prune", "m.gguf", "out", "--layers", "some"])


@pytest.mark.slow
def test_edgellm_bench_takes_the_cli_names(smollm2_gguf: Callable[[str], Any]) -> None:
    path = str(smollm2_gguf("Q4_0"))
    result = edgellm.bench(path, threads="1,2", prompt_tokens=[8], gen_tokens=4, repetitions=1)
    assert [(r.threads, r.prompt_tokens) for r in result.rows] == [(1, 8), (2, 8)]
    assert all(r.decode_tps > 0 for r in result.rows)


@pytest.mark.slow
def test_edgellm_prune_subcommand_writes_the_pruned_artifact(smollm2_gguf: Callable[[str], Any], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from edgellm.cli import main

    out = tmp_path / "pruned"
    assert main(["prune", str(smollm2_gguf("Q8_0")), str(out), "--layers", "27,28", "--max-tokens", "32",
                 "--threads", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dropped"] == [27, 28] and data["size_after"] < data["size_before"]
    assert Path(data["path"]).is_file() and Path(data["path"]).parent == out
