"""Rough edges a new user meets: a missing `edgellm[onnx]` extra (simulated by an import blocker in a child
process: a real import failure), `info` on ONNX and on bundles, `unpack` of an artifact folder, the fallback
warning and the hint printed once, `run --help`, and the cache variable's deprecated alias."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable

import pytest

from edgellm.cli import build_parser, main
from edgellm.converting import convert

_BLOCKER = '''
import sys
class _NoOnnx:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnx", "onnxruntime", "onnxruntime_genai"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoOnnx())
'''


@pytest.fixture(scope="module")
def tiny_onnx(tiny_models: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    out = tmp_path_factory.mktemp("onnx") / "art"
    convert(tiny_models(), out, format="onnx", quant="int8", progress=False)
    return out


def _without_onnx(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sitecustomize.py").write_text(_BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)


def test_blocker_really_blocks(tmp_path: Path) -> None:
    proc = _without_onnx(tmp_path, "-c", "import onnx")
    assert proc.returncode == 1 and "No module named 'onnx'" in proc.stderr


@pytest.mark.parametrize("command", ["convert", "run", "plan", "info"])
def test_cli_without_the_onnx_extra_names_it_without_a_traceback(command: str, tiny_onnx: Path,
                                                                 tiny_models: Callable[..., Path],
                                                                 tmp_path: Path) -> None:
    args = {"convert": ["convert", str(tiny_models()), str(tmp_path / "o"), "--format", "onnx"],
            "run": ["run", str(tiny_onnx), "hi", "-n", "2"], "plan": ["plan", str(tiny_onnx)],
            "info": ["info", str(tiny_onnx)]}[command]
    proc = _without_onnx(tmp_path, "-m", "edgellm.cli", *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    if command == "info":   # info reads the manifest and file sizes only: it works without the extra
        assert proc.returncode == 0 and "int8" in proc.stdout
        return
    assert proc.returncode == 1
    assert "pip install 'edgellm[onnx]'" in proc.stderr and proc.stderr.count("hint:") == 1
    assert not (tmp_path / "o").exists()


def test_api_without_the_onnx_extra_raises_a_typed_error(tiny_onnx: Path, tiny_models: Callable[..., Path],
                                                         tmp_path: Path) -> None:
    code = (f"import edgellm\nfor call in (lambda: edgellm.load({str(tiny_onnx)!r}),\n"
            f"             lambda: edgellm.convert({str(tiny_models())!r}, 'o', format='onnx', quant='int4')):\n"
            "    try:\n        call()\n    except edgellm.BackendUnavailableError as exc:\n"
            "        print('typed', exc.hint)\n")
    proc = _without_onnx(tmp_path, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("typed pip install 'edgellm[onnx]'") == 2


def test_info_on_onnx_counts_external_data_and_shows_tensor_types(tiny_onnx: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tiny_onnx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    data = (tiny_onnx / "model.onnx.data").stat().st_size
    assert info["size_bytes"] >= data + (tiny_onnx / "model.onnx").stat().st_size
    assert info["files"]["model.onnx.data"] == data
    assert any(k.startswith("int8") for k in info["tensor_types"]) and info["quant"] == "int8"
    assert main(["info", str(tiny_onnx)]) == 0
    text = capsys.readouterr().out
    assert "tensor types:" in text and "quant: int8" in text


def test_info_on_a_bundle(tiny_models: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgellm.bundling import bundle

    b = bundle(tiny_models(), tmp_path / "b.bundle", targets=["raspberry-pi-5"])
    assert main(["info", str(b.path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "bundle" and info["targets"] == b.targets
    (name, variant), = info["variants"].items()
    assert name == b.targets["raspberry-pi-5"] and variant["size_bytes"] > 0 and variant["tensor_types"]
    assert main(["info", str(b.path)]) == 0
    text = capsys.readouterr().out
    assert "target raspberry-pi-5 ->" in text and f"\nvariant {name}:\n" in text and "\\nvariant" not in text


def test_unpack_takes_an_artifact_folder(tiny_models: Callable[..., Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    art = tmp_path / "art"
    convert(tiny_models(), art, quant="Q8_0", progress=False)
    assert main(["unpack", str(art), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    assert main(["unpack", str(tmp_path / "hf"), str(tmp_path / "hf2")]) == 1   # no .gguf: says what to pass
    err = capsys.readouterr().err
    assert "no .gguf file" in err and "does not exist" not in err


def test_fallback_warning_and_hint_print_once(tiny_models: Callable[..., Path], tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "edgellm.cli", "convert", str(tiny_models()), str(tmp_path / "q4"), "--quant"]
    proc = subprocess.run(cli + ["Q4_K_M"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).count("fell back") == 1
    proc = subprocess.run(cli + ["Q4KM"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.count("hint:") == 1 and "did you mean Q4_K_M" in proc.stderr


def test_every_run_option_has_help_text() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    for command in ("run", "convert", "info", "unpack"):
        missing = [a.dest for a in sub.choices[command]._actions if not a.help]
        assert not missing, (command, missing)


def test_cache_dir_variable_and_its_deprecated_alias(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from edgellm.default_model import cache_dir, cache_root

    monkeypatch.delenv("EDGELLM_CACHE_DIR", raising=False)
    monkeypatch.setenv("EDGELLM_CACHE", str(tmp_path / "old"))
    with pytest.warns(FutureWarning, match="EDGELLM_CACHE_DIR"):
        assert cache_root() == tmp_path / "old" / "models"
    monkeypatch.setenv("EDGELLM_CACHE_DIR", str(tmp_path / "new"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache_dir() == tmp_path / "new"            # the current name wins, silently
    monkeypatch.delenv("EDGELLM_CACHE")
    monkeypatch.delenv("EDGELLM_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "edgellm"


def test_cli_imatrix_modes(tiny_models: Callable[..., Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """--imatrix off refuses an importance-matrix type before any folder is made; a saved .imatrix FILE is reused
    (no calibration) and recorded; --imatrix with --format onnx is refused."""
    folder = tiny_models(hidden=256, heads=4, kv_heads=2, ffn=512)
    assert main(["convert", str(folder), str(tmp_path / "off"), "--quant", "IQ2_XXS", "--imatrix", "off"]) != 0
    assert "importance matrix" in capsys.readouterr().err and not (tmp_path / "off").exists()
    assert main(["convert", str(folder), str(tmp_path / "on"), "--quant", "Q4_K_M"]) == 0
    saved = next((tmp_path / "on").glob("*.imatrix"))
    assert main(["convert", str(folder), str(tmp_path / "file"), "--quant", "IQ2_XXS", "--imatrix", str(saved)]) == 0
    manifest = json.loads((tmp_path / "file" / "edgellm.json").read_text())
    assert manifest["extra"]["imatrix"]["tensors"] > 0 and "IQ2_XXS" in manifest["tensor_types"]
    assert main(["convert", str(folder), str(tmp_path / "onnx"), "--format", "onnx", "--imatrix", "on"]) != 0


def test_max_memory_is_planned_for_gguf_too(tiny_models: Callable[..., Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tiny_models()
    assert main(["convert", str(folder), str(tmp_path / "a"), "--max-memory", "1MB"]) != 0
    err = capsys.readouterr().err
    assert "converting to GGUF Q8_0 needs about" in err and "max_memory is" in err and not (tmp_path / "a").exists()
    assert main(["convert", str(folder), str(tmp_path / "q4"), "--quant", "Q4_K_M", "--max-memory", "1MB"]) != 0
    err = capsys.readouterr().err                                       # the calibration pass is the largest stage
    assert "hessians" in err and "--imatrix off" in err and not (tmp_path / "q4").exists()
    from edgellm.errors import ConversionError

    assert convert(folder, tmp_path / "b", format="gguf", quant="Q8_0", max_memory="1GiB").path.is_file()
    assert main(["convert", str(folder), str(tmp_path / "o"), "--format", "onnx", "--standard-ops"]) == 0
    assert main(["convert", str(folder), str(tmp_path / "g"), "--standard-ops"]) != 0          # ONNX-only flag
    assert "--standard-ops apply to --format onnx" in capsys.readouterr().err and not (tmp_path / "g").exists()
    with pytest.raises(ConversionError, match="max_memory"):
        convert(folder, tmp_path / "c", format="onnx", quant="int8", max_memory=-5)
