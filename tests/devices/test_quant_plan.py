"""The planner's per-tensor type prediction (converters/quant_plan.py) against the files llama.cpp's quantizer
and edgellm's writer actually produce: every tensor's type, on tiny checkpoints of several families (rows that
do and do not divide 256, fused QKV, recurrent layers, untied heads) and on the real SmolLM2."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_reading import open_gguf
from edgellm.converters.gguf_types import get_quant
from edgellm.converters.quant_plan import gguf_layout
from tests.converters.test_families import K_DIMS, ROWS
from tests.fixtures.tiny import make_family_model

QUANTS = ("Q4_K_M", "Q3_K_M", "Q2_K", "Q5_K_M", "Q4_K_S", "Q3_K_L", "Q6_K", "Q4_0", "IQ4_XS", "Q8_0")
FAMILIES = ("llama", "gemma3", "lfm2", "phi3", "qwen35")


def _types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in open_gguf(path).tensors}


def _config(name: str, k_dims: bool) -> dict:
    cfg = dict(ROWS[name])
    if k_dims:   # rows divisible by 256: the K-quant recipes' own mixes apply instead of fallbacks
        cfg.update(K_DIMS, num_hidden_layers=max(int(cfg.get("num_hidden_layers", 2)), 4))
        if "head_dim" in cfg:
            cfg["head_dim"] = 64
        if name == "phi3":
            cfg["rope_scaling"] = None
    return cfg


@pytest.mark.parametrize("k_dims", [False, True], ids=["fallback-rows", "k-rows"])
@pytest.mark.parametrize("name", FAMILIES)
def test_predicted_types_are_the_converted_files_types(name: str, k_dims: bool, tmp_path: Path) -> None:
    if name == "qwen35" and k_dims:
        pytest.skip("the tiny Qwen3.5's M-RoPE sections fix its head size")
    folder = make_family_model(tmp_path / "m" / "model", _config(name, k_dims), seed=3)
    layout = gguf_layout(folder)
    changed = 0
    for quant in QUANTS:
        real = _types(convert_to_gguf(folder, tmp_path / quant, quant).path)
        predicted = {t.name: t.type for t in layout.types(quant)}
        assert predicted == real, (quant, {n: (real.get(n), predicted.get(n)) for n in set(real) | set(predicted)
                                           if real.get(n) != predicted.get(n)})
        main = get_quant(quant).main_type
        changed += sum(t not in ("F32", "F16", "BF16", main) for t in real.values())
    assert changed, "no tensor left its recipe's main type: the test would not catch a missing rule"


@pytest.mark.slow
def test_smollm2_q4_k_m_prediction_matches_the_artifact_tensor_by_tensor(smollm2_hf: Path, smollm2_gguf) -> None:  # noqa: ANN001
    """The issue's case: 576-wide rows do not divide 256, so 180 of 272 tensors leave Q4_K."""
    real = _types(smollm2_gguf("Q4_K_M"))
    predicted = {t.name: t.type for t in gguf_layout(smollm2_hf).types("Q4_K_M")}
    assert predicted == real
    # 180 fallbacks (166 -> Q5_0, 14 -> Q8_0) plus the tied embedding, which the recipe itself puts in Q8_0
    assert sum(t in ("Q5_0", "Q8_0") for n, t in predicted.items() if n != "token_embd.weight") == 180
    assert len(predicted) == 272
