"""`edgellm.convert` returns one `ConvertResult` whatever the format (issue 12), built from the converter's own
result; the CLI's --json prints its fields."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

import edgellm
from edgellm.cli import main
from edgellm.converting import ConvertResult


def test_gguf_and_onnx_give_the_same_result_type(tiny_models: Callable[..., Path], tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    gguf = edgellm.convert(tiny_models(), tmp_path / "g", quant="Q8_0", progress=False)
    onnx = edgellm.convert(tiny_models(), tmp_path / "o", format="onnx", quant="int8", progress=False)
    for r, fmt, quant in ((gguf, "gguf", "Q8_0"), (onnx, "onnx", "int8")):
        assert type(r) is ConvertResult and r.format == fmt and r.quant.lower() == quant.lower()
        assert r.path.is_file() and r.manifest_path.is_file() and r.path.name in r.files
        assert sum(r.tensor_types.values()) > 0
    assert gguf.fused is None and isinstance(onnx.fused, bool)


def test_overwrite_moves_the_paths_into_out(tiny_models: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "a"
    edgellm.convert(tiny_models(), out, quant="Q8_0", progress=False)
    again = edgellm.convert(tiny_models(), out, quant="F16", overwrite=True, progress=False)
    assert again.path.parent == out and again.manifest_path.parent == out and again.quant.upper() == "F16"


def test_cli_json_prints_the_result(tiny_models: Callable[..., Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tiny_models()), str(tmp_path / "c"), "--quant", "Q8_0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "gguf" and data["quant"] == "Q8_0" and Path(data["manifest"]).is_file()
