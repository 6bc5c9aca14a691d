"""The ONNX converter streams: slicing, threads and page release change no byte of the artifact, and the
conversion's peak RSS does not grow with the number of layers (measured in child processes)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgellm.converters import onnx_stream
from edgellm.converters.onnx import convert_to_onnx
from edgellm.converters.onnx_memory import parse_bytes
from edgellm.converters.quant import QuantSpec, quantize_blocks
from edgellm.errors import ConversionError
from tests.fixtures.big_random import Shape, write_big_llama

ROOT = Path(__file__).resolve().parents[2]
TIED = Shape(256, 2, 4, 2, 512, 1024)            # bf16 shards, tied embeddings: the layout of real checkpoints


def _digest(folder: Path) -> tuple[str, str]:
    return tuple(hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in ("model.onnx", "model.onnx.data"))  # type: ignore[return-value]  # two items


@pytest.fixture(scope="module")
def tied_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_big_llama(tmp_path_factory.mktemp("tied") / "m", TIED, shard_bytes=300_000)


@pytest.mark.parametrize("quant", ["fp16", "int8", "int4-rtn", "int4"])
def test_slices_and_threads_write_the_same_bytes(tied_model, tmp_path, monkeypatch, quant):
    """Whole tensors in one thread vs tiny slices (a few rows; transposed heads in 7-row slices) in 3 threads."""
    opts = dict(calibration_tokens=512)
    whole = convert_to_onnx(tied_model, tmp_path / "whole", quant, threads=1, **opts)
    monkeypatch.setattr(onnx_stream, "CHUNK_ELEMENTS", 256 * 5)
    monkeypatch.setattr(onnx_stream, "TRANSPOSE_ROWS", 7)
    monkeypatch.setattr(onnx_stream, "GPTQ_ROWS", 100)     # GPTQ layers in 3 slices of rows, the head in 11
    sliced = convert_to_onnx(tied_model, tmp_path / "sliced", quant, threads=3, **opts)
    assert _digest(whole.path.parent) == _digest(sliced.path.parent)
    assert whole.tensor_types == sliced.tensor_types


def test_sliced_quantization_equals_whole():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(37, 64)).astype(np.float32)
    spec = QuantSpec("int4", "mse", 32)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        parts = list(onnx_stream.quantize_rows(pool, onnx_stream.Source.of(w), spec, "w", threads=2, elements=5 * 64))
    assert [(lo, hi) for lo, hi, _ in parts][:2] == [(0, 5), (5, 10)] and parts[-1][1] == 37
    whole = quantize_blocks(w, spec)
    assert np.array_equal(np.concatenate([bq.packed() for _, _, bq in parts]), whole.packed())
    assert np.array_equal(np.concatenate([bq.scales for _, _, bq in parts]), whole.scales)


def test_source_gathers_rows_by_slices(tied_model):
    from edgellm.converters.hf import read_hf_model
    with read_hf_model(tied_model) as m:
        src = onnx_stream.Source.mapped(m, "model.embed_tokens.weight", (1024, 256))
        ids = np.array([[0, 1023, 5], [700, 5, 2]])
        assert np.array_equal(src[ids], m.tensor("model.embed_tokens.weight")[ids])


def test_max_memory_is_planned_and_refused_with_numbers(tied_model, tmp_path):
    assert parse_bytes("4GiB") == 4 << 30 and parse_bytes("1.5GB") == 1_500_000_000 and parse_bytes(123) == 123
    with pytest.raises(ConversionError, match="not a size"):
        parse_bytes("lots")
    with pytest.raises(ConversionError, match=r"needs about .* GiB .*max_memory is 0\.05 GiB") as exc:
        convert_to_onnx(tied_model, tmp_path / "o", "int4-rtn", max_memory="50MiB")
    assert exc.value.hint and not (tmp_path / "o").exists()
    res = convert_to_onnx(tied_model, tmp_path / "ok", "int4-rtn", max_memory="4GiB")
    assert res.path.is_file()


CHILD = """
import sys
from edgellm.converters.onnx import convert_to_onnx
convert_to_onnx(sys.argv[1], sys.argv[2], sys.argv[3], threads=1)
"""


def _peak_rss(src: Path, out: Path, quant: str) -> int:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(out), quant], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read().decode() if proc.stderr else ""
    return usage.ru_maxrss * 1024


@pytest.mark.parametrize("quant", ["int4-rtn", "fp16"])
def test_peak_rss_does_not_grow_with_layers(tmp_path, quant):
    """2 vs 10 layers of the same width: the 8 extra layers hold 8 x 15 MiB of float32 weights (8 x 7.6 MiB
    mapped bf16); a converter that kept them, or their pages, would grow by that much."""
    shapes = {n: Shape(512, n, 8, 2, 2048, 4096) for n in (2, 10)}
    extra = 4 * (shapes[10].params - shapes[2].params)
    peaks = {}
    for n, shape in shapes.items():
        src = write_big_llama(tmp_path / f"m{n}", shape)
        peaks[n] = _peak_rss(src, tmp_path / f"o{n}", quant)
    growth = peaks[10] - peaks[2]
    assert growth < 0.25 * extra, (peaks, extra)
