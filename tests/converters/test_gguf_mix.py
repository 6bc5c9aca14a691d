"""The same-size mix of GPTQ-rounded GGUF tensors (converters/gguf_mix.py): the alternatives really are the same
size, each tensor keeps the candidate with the smallest measured output error, and the mixed file is what was
encoded, the recipe's size to the byte, and computes in llama.cpp what numpy computes over its weights."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgellm.converters.families.weights import reference_logits
from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_blocks import LAYOUTS
from edgellm.converters.gguf_gptq import _output_error, calibrate_gptq, encode_best, encode_gptq
from edgellm.converters.gguf_mix import SAME_SIZE, candidates
from edgellm.converters.gguf_to_hf import gguf_to_hf
from edgellm.converters.quant_plan import gguf_layout
from edgellm.errors import ConversionError, QuantizationError
from tests.converters.test_families import agreement, llama_cpp_logits
from tests.converters.test_gguf_gptq import IDS, TOKENS, _correlated
from tests.fixtures.tiny import make_tiny_model


def _bits(t: str) -> float:
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t]]
    return 8 * size / block


def test_every_alternative_is_the_same_size_and_has_a_layout() -> None:
    for recipe, alts in SAME_SIZE.items():
        assert recipe in LAYOUTS
        for alt in alts:
            assert alt.type in LAYOUTS and alt.type != recipe
            assert _bits(alt.type) == _bits(recipe), (recipe, alt.type)


def test_candidates_follow_the_mode_and_the_row_length() -> None:
    assert candidates("Q4_0", 576, "off") == ("Q4_0",)
    assert candidates("Q4_0", 576, "fast") == ("Q4_0",)                 # Q4_K needs rows of 256-multiples
    assert candidates("Q4_0", 1536, "fast") == ("Q4_0", "Q4_K")
    assert candidates("Q4_0", 576, "size") == ("Q4_0", "IQ4_NL")
    assert candidates("Q4_0", 1536, "size") == ("Q4_0", "Q4_K", "IQ4_NL")
    assert candidates("Q8_0", 1536, "size") == ("Q8_0",)                # nothing else spends 8.5 bits
    with pytest.raises(QuantizationError, match="unknown mix"):
        candidates("Q4_0", 576, "best")


def test_the_kept_encoding_has_the_smallest_measured_error() -> None:
    h = _correlated(512, seed=7)
    w = np.random.default_rng(8).standard_normal((48, 512)).astype(np.float32) * 0.05
    types = candidates("Q4_0", 512, "size")
    errors = {t: _output_error(w, encode_gptq(w, t, h)[1], h) for t in types}
    enc, values = encode_best(w, types, h)
    assert enc.type == min(errors, key=errors.__getitem__)
    assert _output_error(w, values, h) == pytest.approx(min(errors.values()))
    assert np.array_equal(gguf.quants.dequantize(enc.raw, gguf.GGMLQuantizationType[enc.type]), values)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # hidden 256, ffn 768: every matrix may take Q4_K (rows of 256-multiples) or IQ4_NL
    return make_tiny_model(tmp_path_factory.mktemp("mix") / "m", hidden=256, heads=4, kv_heads=2, ffn=768,
                           layers=2)


def test_mixed_file_keeps_the_size_holds_the_encodings_and_llama_cpp_agrees(tiny: Path, tmp_path: Path) -> None:
    off = convert_to_gguf(tiny, tmp_path / "off", "Q4_0", imatrix=True, calibration_tokens=TOKENS, mix="off")
    mixed = convert_to_gguf(tiny, tmp_path / "size", "Q4_0", imatrix=True, calibration_tokens=TOKENS, mix="size")
    assert mixed.path.stat().st_size == off.path.stat().st_size
    assert not list((tmp_path / "size").glob("*.partial"))                  # the spilled encodings are gone
    planned = {t.name: t.type for t in gguf_layout(tiny).types("Q4_0", imatrix=True)}
    assert Counter(off.tensor_types) == Counter(planned.values())            # off: the recipe's own types
    record = json.loads(mixed.manifest_path.read_text())["extra"]["rounding"]
    assert record["mix"] == "size" and sum(record["tensors"].values()) == 2 * 7
    assert set(record["tensors"]) - {"Q4_0", "Q4_1"}, record                 # some tensor took another grid
    # llama.cpp kept each encoded tensor's type and bytes (the pass is deterministic: encode again and compare)
    (tmp_path / "spill").mkdir()
    again = calibrate_gptq(tiny, planned, tokens=TOKENS, mix="size", spill=tmp_path / "spill")
    assert all(isinstance(e.raw, np.memmap) for e in again.tensors.values())
    assert len(list((tmp_path / "spill").iterdir())) == len(again.tensors)
    stored = {t.name: t for t in gguf.GGUFReader(mixed.path).tensors}
    for name, enc in again.tensors.items():
        assert stored[name].tensor_type.name == enc.type, name
        assert np.array_equal(np.asarray(stored[name].data).reshape(-1), enc.raw.reshape(-1)), name
    back = gguf_to_hf(mixed.path, tmp_path / "deq", dtype="F32", overwrite=True)
    got = llama_cpp_logits(mixed.path, IDS)
    same = agreement(got, reference_logits(back, IDS).astype(np.float64))
    assert same[0] >= 0.8 and same[1] < 0.05, same


def test_mix_is_checked_and_refused_outside_gguf(tiny: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from edgellm.cli import main

    with pytest.raises(QuantizationError, match="unknown mix"):
        convert_to_gguf(tiny, tmp_path / "a", "Q4_0", mix="best")  # type: ignore[arg-type]  # a bad value on purpose
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConversionError, match="blk.9.nope.weight"):
        convert_to_gguf(tiny, tmp_path / "b", "Q4_0", tensor_types={"blk.9.nope.weight": "Q8_0"})
    assert not (tmp_path / "b").exists()
    over = convert_to_gguf(tiny, tmp_path / "c", "Q4_0", imatrix=False, tensor_types={"blk.0.ffn_down.weight": "Q8_0"})
    got = {t.name: t.tensor_type.name for t in gguf.GGUFReader(over.path).tensors}
    assert got["blk.0.ffn_down.weight"] == "Q8_0" and got["blk.1.ffn_down.weight"] == "Q4_0"
    assert main(["convert", str(tiny), str(tmp_path / "o"), "--format", "onnx", "--mix", "size"]) != 0
    assert "--mix applies to GGUF" in capsys.readouterr().err


def test_on_float_weights_the_same_size_grids_differ_as_the_registry_expects() -> None:
    """Not an artefact of a checkpoint unpacked from a quantized grid: on Gaussian and heavy-tailed float weights
    GPTQ's output error at 4.5 bits is Q4_K < IQ4_NL < Q4_0 (measured at 256 x 1536: 0.63x / 0.78x of Q4_0
    for Gaussian, 0.42x / 0.55x for Student-t(3))."""
    h = _correlated(768, seed=3)
    rng = np.random.default_rng(1)
    for w in (rng.standard_normal((64, 768)), rng.standard_t(3, (64, 768))):
        w = (w * 0.02).astype(np.float32)
        err = {t: _output_error(w, encode_gptq(w, t, h)[1], h) for t in ("Q4_0", "IQ4_NL", "Q4_K")}
        assert err["Q4_K"] < err["IQ4_NL"] < 0.9 * err["Q4_0"], err
