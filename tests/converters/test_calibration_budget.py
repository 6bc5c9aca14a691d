"""The GPTQ calibration budget (calibration_time / --calibration-time, calibration_tokens) and the progress it
reports: a budget drops whole sequences after a measured layer, never the recipe; the manifest says what ran."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from edgellm.converters.onnx import convert_to_onnx
from edgellm.errors import ConversionError
from edgellm.progress import ProgressEvent, reporter
from tests.fixtures.big_random import Shape, write_big_llama

SMALL = Shape(256, 3, 4, 2, 512, 1024)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_big_llama(tmp_path_factory.mktemp("calib") / "m", SMALL)


def _calibration(folder: Path) -> dict:
    return json.loads((folder / "edgellm.json").read_text())["extra"]["calibration"]


def test_a_budget_below_gptq_cost_keeps_one_sequence_and_warns(small_model, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="edgellm.converters.calibration"):
        res = convert_to_onnx(small_model, tmp_path / "tight", "int4", threads=1, calibration_tokens=1536,
                              calibration_time=1e-3)
    cal = _calibration(res.path.parent)
    assert cal["tokens"] == 1536 and cal["time_budget_s"] == 1e-3
    assert cal["tokens_min"] == 512 and cal["over_budget"] is True      # layer 0 on all 3 sequences, then 1
    assert "cannot be met" in caplog.text
    assert res.tensor_types == convert_to_onnx(small_model, tmp_path / "free", "int4", threads=1,
                                               calibration_tokens=1536).tensor_types   # same recipe, same layout


def test_a_generous_budget_changes_nothing(small_model, tmp_path):
    a = convert_to_onnx(small_model, tmp_path / "a", "int4", threads=1, calibration_tokens=1024)
    b = convert_to_onnx(small_model, tmp_path / "b", "int4", threads=1, calibration_tokens=1024,
                        calibration_time=3600)
    cal = _calibration(b.path.parent)
    assert cal["tokens_min"] == 1024 and cal["over_budget"] is False and cal["layers_s"] > 0
    assert (a.path.parent / "model.onnx.data").read_bytes() == (b.path.parent / "model.onnx.data").read_bytes()
    with pytest.raises(ConversionError, match="positive number of seconds"):
        convert_to_onnx(small_model, tmp_path / "c", "int4", calibration_time=0)


def test_progress_reports_calibrated_layers_with_an_eta(small_model, tmp_path):
    events: list[ProgressEvent] = []
    convert_to_onnx(small_model, tmp_path / "p", "int4", threads=1, calibration_tokens=512,
                    calibration_time=3600, progress=events.append)
    layers = [e for e in events if "layers" in e.stage and e.done]
    assert [e.done for e in layers if not e.finished] == [1, 2, 3]
    assert layers[0].message.startswith("layer 0 calibrated on 512 tokens, pass projected ")
    assert layers[0].message.endswith("s of 3600s")
    assert layers[0].eta_s is not None and layers[0].eta_s > 0 and layers[-1].eta_s is None
    log = io.StringIO()
    rep = reporter(True, stream=log)
    rep.emit(ProgressEvent("GPTQ", 2, 10, "layers", 130.0))
    assert "2/10 layers (20%), 2m10s, ETA 8m40s" in log.getvalue()


def test_cli_flag_reaches_the_converter(small_model, tmp_path, capsys):
    from edgellm.cli import main

    assert main(["convert", str(small_model), str(tmp_path / "cli"), "--format", "onnx", "--quant", "int4",
                 "--calibration-tokens", "512", "--calibration-time", "600", "--threads", "1"]) == 0
    assert _calibration(tmp_path / "cli")["time_budget_s"] == 600
    # the token count and the budget are shared: GGUF's importance matrix / GPTQ pass calibrates on them too
    assert main(["convert", str(small_model), str(tmp_path / "g"), "--quant", "Q4_K_M", "--imatrix", "on",
                 "--calibration-tokens", "512", "--calibration-time", "600"]) == 0
    rounding = json.loads((tmp_path / "g" / "edgellm.json").read_text())["extra"]["rounding"]
    assert rounding["method"] == "gptq" and rounding["calibration"]["time_budget_s"] == 600
    assert rounding["calibration"]["tokens"] == 512


def test_gguf_budget_drops_sequences_and_a_generous_one_changes_nothing(small_model, tmp_path, caplog):
    from edgellm.converters.gguf import convert_to_gguf

    with caplog.at_level(logging.WARNING, logger="edgellm.converters.calibration"):
        tight = convert_to_gguf(small_model, tmp_path / "tight", "Q4_0", imatrix=True, calibration_tokens=1536,
                                calibration_time=1e-3)
    cal = json.loads(tight.manifest_path.read_text())["extra"]["rounding"]["calibration"]
    assert cal["tokens"] == 1536 and cal["tokens_min"] == 512 and cal["over_budget"] is True
    assert "cannot be met" in caplog.text
    free = convert_to_gguf(small_model, tmp_path / "free", "Q4_0", imatrix=True, calibration_tokens=1024)
    roomy = convert_to_gguf(small_model, tmp_path / "roomy", "Q4_0", imatrix=True, calibration_tokens=1024,
                            calibration_time=3600)
    assert tight.tensor_types == free.tensor_types
    assert free.path.read_bytes() == roomy.path.read_bytes()
    assert free.path.read_bytes() != tight.path.read_bytes()        # fewer sequences, other codes
    with pytest.raises(ConversionError, match="positive number of seconds"):
        convert_to_gguf(small_model, tmp_path / "bad", "Q4_0", calibration_time=-1)
