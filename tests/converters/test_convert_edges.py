"""Converter edges: ONNX without tokenizer.json is refused before any work, ONNX folders get normal
permissions, an existing output is refused without overwrite and replaced whole with it, quant near-misses."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Callable

import pytest

from edgellm.converting import check_quant, convert
from edgellm.errors import OutputPathError, QuantizationError, TokenizerError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_onnx_without_tokenizer_json_is_refused_before_converting(tiny_models: Callable[..., Path],
                                                                  tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    model = tmp_path / "model"
    shutil.copytree(tiny_models(), model)
    (model / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError) as err:
        convert(model, tmp_path / "out", format="onnx", quant="int8", progress=False)
    assert "tokenizer.json" in err.value.message and err.value.hint
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_onnx_output_folder_has_the_umask_mode_not_mkdtemps_0700(tiny_models: Callable[..., Path],
                                                                 tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    convert(tiny_models(), tmp_path / "onnx", format="onnx", quant="int8", progress=False)
    assert stat.S_IMODE((tmp_path / "onnx").stat().st_mode) == 0o777 & ~_umask()


def test_existing_output_is_refused_then_replaced_whole_with_overwrite(tiny_models: Callable[..., Path],
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "art"
    first = convert(tiny_models(), out, quant="Q8_0", progress=False)
    (out / "notes.txt").write_text("stale")
    with pytest.raises(OutputPathError) as err:
        convert(tiny_models(), out, quant="F16", progress=False)
    assert "--overwrite" in err.value.hint
    assert first.path.is_file()                      # refused: nothing touched
    second = convert(tiny_models(), out, quant="F16", overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([second.path.name, "edgellm.json"])
    assert second.path.parent == out and second.manifest_path == out / "edgellm.json"
    assert not first.path.exists() and not list(tmp_path.glob(".art.partial-*"))
    convert(tiny_models(), tmp_path / "empty", quant="Q8_0", progress=False)   # an empty folder is fine
    (tmp_path / "empty2").mkdir()
    convert(tiny_models(), tmp_path / "empty2", quant="Q8_0", progress=False)


@pytest.mark.parametrize("fmt, quant, says", [
    ("gguf", "Q4KM", "did you mean Q4_K_M"), ("gguf", "q4-k-m", "did you mean Q4_K_M"),
    ("gguf", "Q5_K_MM", "did you mean Q5_K_M"), ("gguf", "int4", "--format onnx"), ("gguf", "INT8", "--format onnx"),
    ("onnx", "Q4_K_M", "--format gguf"), ("onnx", "int44", "did you mean int4"), ("onnx", "int4gptq", "int4-gptq"),
])
def test_quant_near_misses_name_the_fix(fmt: str, quant: str, says: str) -> None:
    with pytest.raises(QuantizationError) as err:
        check_quant(fmt, quant)
    assert says in str(err.value)


def test_known_quants_pass() -> None:
    for fmt, quant in (("gguf", "q4_k_m"), ("gguf", "Q8_0"), ("onnx", "int4"), ("onnx", "INT8"), ("gguf", "auto")):
        check_quant(fmt, quant)
