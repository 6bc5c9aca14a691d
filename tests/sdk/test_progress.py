"""Progress of long work: the `progress=` option (None/True/False/callable), its terminal rendering, and the
events convert (GGUF + llama.cpp quantizer, ONNX + GPTQ calibration), prune and autoquant report."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from edgellm.converting import convert
from edgellm.errors import OptionError
from edgellm.progress import ProgressEvent, Reporter, reporter, terminal


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_argument_kinds() -> None:
    assert reporter(False).enabled is False
    assert reporter(True).enabled is True
    got: list[ProgressEvent] = []
    rep = reporter(got.append)
    with rep.child("[1/2] ").stage("work", total=4, unit="steps") as st:
        st.advance(2, "half")
    assert [(e.stage, e.done, e.finished) for e in got] == [("[1/2] work", 0, False), ("[1/2] work", 2, False),
                                                            ("[1/2] work", 2, True)]
    assert got[1].fraction == 0.5 and got[1].message == "half"
    with pytest.raises(OptionError):
        reporter("yes")  # type: ignore[arg-type]  # a wrong type on purpose


def test_default_follows_whether_stderr_is_a_terminal() -> None:
    assert reporter(None, stream=_Tty()).enabled is True
    assert reporter(None, stream=io.StringIO()).enabled is False


def test_terminal_rendering_in_place_and_in_a_log() -> None:
    tty = _Tty()
    with reporter(True, stream=tty).stage("writing", total=10, unit="tensors") as st:
        for _ in range(10):
            st.advance()
    text = tty.getvalue()
    assert text.startswith("\rwriting: 0/10 tensors (0%)") and text.endswith("done\n") and "10/10" in text
    log = io.StringIO()   # not a terminal: start and end lines, throttled in between (a log stays short)
    with reporter(True, stream=log).stage("ranking", total=1000, unit="layers") as st:
        for _ in range(1000):
            st.advance()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("ranking: 0/1000") and lines[1].endswith("done")
    notes = io.StringIO()
    terminal(notes, notes=False).note("| table |")
    assert notes.getvalue() == ""


def test_a_raising_callback_aborts_the_operation(tiny_models: Callable[..., Path], tmp_path: Path) -> None:
    def stop(event: ProgressEvent) -> None:
        if event.done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(tiny_models(), tmp_path / "out", quant="F16", progress=stop)
    assert not (tmp_path / "out").exists()


def test_gguf_convert_reports_writing_and_the_llama_cpp_quantizer(tiny_models: Callable[..., Path],
                                                                   tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    convert(tiny_models(), tmp_path / "q4", quant="Q4_K_M", progress=events.append)
    finished = {e.stage: e for e in events if e.finished}
    writing = next(e for s, e in finished.items() if s.startswith("writing "))
    assert writing.total == writing.done > 0 and writing.unit == "tensors"
    quantizer = finished["quantizing Q4_K_M (llama.cpp)"]
    gguf = next((tmp_path / "q4").glob("*.gguf"))
    assert quantizer.unit == "B" and quantizer.done == gguf.stat().st_size


def test_onnx_convert_reports_calibration_and_every_layer(tiny_models: Callable[..., Path], tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    events: list[ProgressEvent] = []
    model = tiny_models(layers=3)
    convert(model, tmp_path / "o", format="onnx", quant="int4", progress=events.append)
    stages = [e.stage for e in events]
    assert "tokenizing calibration text" in stages
    layers = [e for e in events if e.stage.startswith("ONNX int4 layers (GPTQ-calibrated)")]
    assert [e.message for e in layers if e.message] == [f"layer {i} calibrated" for i in range(3)]
    assert layers[-1].finished and layers[-1].done == layers[-1].total == 3


def test_cli_convert_always_shows_progress_on_stderr(tiny_models: Callable[..., Path], tmp_path: Path) -> None:
    # stderr is a pipe here, not a terminal: the CLI reports anyway (plain lines), stdout stays machine-readable
    proc = subprocess.run([sys.executable, "-m", "edgellm.cli", "convert", str(tiny_models()), str(tmp_path / "o"),
                           "--quant", "Q4_K_M", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "writing F32: 0/" in proc.stderr and "quantizing Q4_K_M (llama.cpp)" in proc.stderr
    assert json.loads(proc.stdout)["path"].endswith(".gguf")


def test_reporter_passes_through() -> None:
    rep = Reporter(None)
    assert reporter(rep) is rep


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgellm.cli", *args], capture_output=True, text=True, timeout=600)


def test_autoquant_reports_each_candidate_and_ends_with_its_table(tiny_models: Callable[..., Path],
                                                                   tmp_path: Path) -> None:
    from edgellm.quant_search import autoquant

    events: list[ProgressEvent] = []
    res = autoquant(tiny_models(layers=3), tmp_path / "auto", max_kld=100.0, candidates=("Q8_0", "Q4_0"),
                    max_tokens=32, threads=1, speed_tokens=4, progress=events.append)
    stages = {e.stage for e in events}
    assert any(s.startswith("[reference] writing") for s in stages) and "[reference] scoring" in stages
    assert any(s.startswith("[1/2] gguf:Q8_0: writing") for s in stages)
    assert "[2/2] gguf:Q4_0: measuring KLD, perplexity and decode speed" in stages
    note = events[-1]
    assert note.stage == "note" and "| gguf:Q8_0 |" in note.message and "| gguf:Q4_0 |" in note.message
    assert note.message.endswith(res.format_table())
    ref = json.loads((tmp_path / "auto" / "edgellm.json").read_text())["extra"]["autoquant"]["reference"]
    # the reference was built in a temporary folder that is gone: the manifest says how it was built, not where
    assert ref["artifact"] is None and ref["temporary"] is True and Path(ref["built_from"]).is_dir()


def test_cli_autoquant_prints_the_measured_table(tiny_models: Callable[..., Path], tmp_path: Path) -> None:
    proc = _cli("convert", str(tiny_models(layers=3)), str(tmp_path / "auto"), "--quant", "auto", "--max-kld", "100")
    assert proc.returncode == 0, proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("| gguf:")]
    assert len(table) == 6 and sum("**kept**" in line for line in table) == 1
    assert "kept gguf:" in proc.stdout and "[6/6] gguf:" in proc.stderr
    (tmp_path / "auto" / "old.txt").write_text("x")   # a non-empty OUT is refused before minutes of work
    proc = _cli("convert", str(tiny_models(layers=3)), str(tmp_path / "auto"), "--quant", "auto", "--max-kld", "1")
    assert proc.returncode == 1 and "--overwrite" in proc.stderr and "[1/6]" not in proc.stderr


def test_cli_prune_reports_the_ranking_and_prints_its_tables(tiny_models: Callable[..., Path],
                                                              tmp_path: Path) -> None:
    proc = _cli("convert", str(tiny_models(layers=3)), str(tmp_path / "pruned"), "--prune-layers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "ranking layers (each dropped alone): 0/3 layers" in proc.stderr
    assert "ranking layers (each dropped alone): 3/3 layers (100%)" in proc.stderr
    assert "| layer dropped alone |" in proc.stdout and "| layers dropped together |" in proc.stdout
    ranking = [line for line in proc.stdout.splitlines() if line[:4] in ("| 0 ", "| 1 ", "| 2 ")]
    assert len(ranking) >= 3
    manifest = json.loads((tmp_path / "pruned" / "edgellm.json").read_text())
    assert "(temporary)" in manifest["extra"]["prune"]["source"]   # not a path that no longer exists
