"""The CLI is a thin dispatcher: each subcommand runs the library function on real (tiny) models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgellm.cli import build_parser, main


def test_help_lists_the_core_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("convert", "run", "info", "unpack", "demo"):
        assert cmd in out


def test_parser_dests_match_library_keywords() -> None:
    """`func(**vars(args))` only works when every dest is a keyword of the command function."""
    import inspect

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        func = p.get_default("func")
        params = inspect.signature(func).parameters
        accepts_kwargs = any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values())
        for action in p._actions:
            if action.dest in ("help", "verbose"):  # main() handles -v itself, before calling the function
                continue
            assert accepts_kwargs or action.dest in params, f"{name}: --{action.dest} is not a keyword of {func}"


def test_convert_info_run_unpack_round_trip(tiny_models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    art = tmp_path / "art"
    assert main(["convert", str(tiny_models()), str(art), "--quant", "Q8_0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert Path(result["path"]).is_file() and result["tensor_types"]["Q8_0"] == 15

    assert main(["info", str(art), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "gguf" and info["manifest"]["quant"] == "Q8_0" and info["tensors"] == 20

    assert main(["run", str(art), "hello world", "-n", "5", "--temperature", "0", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["metrics"]["generated_tokens"] >= 1 and run["finish_reason"] in ("length", "stop")
    assert run["metrics"]["backend"].split(" (")[0] == "llama.cpp"   # "(safe kernels: ...)" on AMX hosts

    assert main(["run", str(art), "hello world", "-n", "4", "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert "decode" in captured.err and "tok/s" in captured.err

    back = tmp_path / "back"
    assert main(["unpack", result["path"], str(back), "--dtype", "F32"]) == 0
    assert (back / "config.json").is_file() and (back / "tokenizer.json").is_file()


def test_errors_exit_1_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "missing.gguf"), "hi"]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "hint:" in err
    assert main(["convert", str(tmp_path), str(tmp_path / "o"), "--quant", "Q9_9"]) == 1
    assert "unknown GGUF quant type" in capsys.readouterr().err


def test_convert_quant_auto_and_prune_layers(tiny_models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    src = str(tiny_models(layers=4, hidden=256, heads=4, kv_heads=2, ffn=512))
    assert main(["convert", src, str(tmp_path / "auto"), "--quant", "auto", "--max-kld", "5", "--json"]) == 0
    auto = json.loads(capsys.readouterr().out)
    manifest = json.loads((tmp_path / "auto" / "edgellm.json").read_text())
    assert Path(auto["path"]).is_file() and len(manifest["extra"]["autoquant"]["candidates"]) >= 2

    assert main(["convert", src, str(tmp_path / "pruned"), "--quant", "Q8_0", "--prune-layers", "1", "--json"]) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert len(pruned["dropped"]) == 1 and pruned["size_after"] < pruned["size_before"]
    assert Path(pruned["path"]).is_file()

    assert main(["convert", src, str(tmp_path / "x"), "--quant", "auto", "--prune-layers", "1"]) == 1
    assert "one at a time" in capsys.readouterr().err


def test_public_api_names_are_the_functions_even_after_submodule_imports() -> None:
    import importlib

    import edgellm

    for module in ("converting", "planning", "bundling", "evaluation", "benchmark", "quant_search", "pruning"):
        importlib.import_module(f"edgellm.{module}")
    for name in edgellm.__all__:
        if name == "__version__":
            continue
        value = getattr(edgellm, name)
        assert callable(value), f"edgellm.{name} is {value!r}"
