"""`edgellm convert --rounding`: the CLI reaches convert_to_gguf's rounding= and the manifest records the method
that wrote the blocks; ONNX refuses the flag before any work."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgellm.cli import main
from tests.converters.test_families import ROWS
from tests.fixtures.tiny import make_family_model


@pytest.fixture(scope="module")
def llama_256(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose rows (256) hold whole K-quant super-blocks, so GPTQ has tensors to encode."""
    config = {**ROWS["llama"], "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
              "num_key_value_heads": 2, "rope_scaling": None}
    return make_family_model(tmp_path_factory.mktemp("rounding") / "hf", config, seed=5)


def _rounding(folder: Path) -> dict:
    return json.loads((folder / "edgellm.json").read_text())["extra"]["rounding"]


def test_rounding_flag_selects_the_method(llama_256: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["--quant", "Q4_0", "--imatrix", "on", "--calibration-tokens", "512", "--threads", "1"]
    assert main(["convert", str(llama_256), str(tmp_path / "gptq"), "--rounding", "gptq", "--mix", "off",
                 *common]) == 0
    gptq = _rounding(tmp_path / "gptq")
    assert gptq["method"] == "gptq" and gptq["mix"] == "off" and set(gptq["tensors"]) <= {"Q4_0", "Q4_1"}
    assert main(["convert", str(llama_256), str(tmp_path / "auto"), *common]) == 0
    auto = _rounding(tmp_path / "auto")
    assert auto["method"] == "gptq" and auto["mix"] == "off"          # auto: GPTQ when a matrix is computed
    assert main(["convert", str(llama_256), str(tmp_path / "llama"), "--rounding", "llama", *common]) == 0
    assert _rounding(tmp_path / "llama")["method"] == "llama"
    # same types and size whichever rounding wrote the codes
    sizes = {name: sum(f.stat().st_size for f in (tmp_path / name).glob("*.gguf"))
             for name in ("gptq", "auto", "llama")}
    assert sizes["gptq"] == sizes["auto"] == sizes["llama"] > 0
    capsys.readouterr()
    assert main(["convert", str(llama_256), str(tmp_path / "onnx"), "--format", "onnx", "--rounding", "gptq"]) != 0
    assert "--rounding applies to GGUF" in capsys.readouterr().err and not (tmp_path / "onnx").exists()
    assert main(["convert", str(llama_256), str(tmp_path / "off"), "--quant", "Q4_0", "--imatrix", "off",
                 "--rounding", "gptq"]) != 0
    assert "needs the calibration pass" in capsys.readouterr().err
