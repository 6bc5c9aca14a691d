"""Measured auto-quant on SmolLM2 with a short ladder and a short text."""
from __future__ import annotations

import json

import pytest

from edgellm.quant_search import autoquant
from edgellm.errors import BudgetNotMetError, EdgeLLMError

LADDER = ("Q8_0", "Q4_K_M", "Q4_0")


@pytest.mark.slow
def test_keeps_smallest_candidate_meeting_the_budget(smollm2_hf, smollm2_gguf, tmp_path) -> None:
    res = autoquant(smollm2_hf, tmp_path / "auto", max_kld=0.1, candidates=LADDER,
                    reference=smollm2_gguf("F16"), max_tokens=64, threads=1, speed_tokens=8)
    by = {c.quant: c for c in res.table}
    assert set(by) == set(LADDER) and all(c.kld is not None and c.decode_tps for c in res.table)
    assert by["Q8_0"].kld < by["Q4_0"].kld and by["Q8_0"].size_bytes > by["Q4_0"].size_bytes
    meeting = [c for c in res.table if c.kld <= 0.1]
    assert res.chosen is min(meeting, key=lambda c: c.size_bytes)
    manifest = json.loads((tmp_path / "auto" / "edgellm.json").read_text())
    assert manifest["quant"] == res.chosen.quant
    table = manifest["extra"]["autoquant"]["candidates"]
    assert [row["quant"] for row in table] == list(LADDER) and manifest["extra"]["autoquant"]["budget"]["max_kld"] == 0.1
    assert not any(p.name.startswith(".edgellm-autoquant") for p in tmp_path.iterdir())  # work dir removed


@pytest.mark.slow
def test_refuses_with_measured_table(smollm2_hf, smollm2_gguf, tmp_path) -> None:
    with pytest.raises(BudgetNotMetError) as exc:
        autoquant(smollm2_hf, tmp_path / "none", max_kld=1e-6, candidates=("Q8_0", "Q4_0"),
                  reference=smollm2_gguf("F16"), max_tokens=48, threads=1, speed_tokens=4)
    table = exc.value.table
    assert [r["quant"] for r in table] == ["Q8_0", "Q4_0"] and all(r["kld"] > 1e-6 for r in table)
    assert "KLD" in table[0]["why_not"] and "| gguf:Q4_0 |" in str(exc.value)
    assert not (tmp_path / "none").exists()


def test_rejects_unknown_format(tmp_path) -> None:
    with pytest.raises(EdgeLLMError, match="unknown format"):
        autoquant(tmp_path, tmp_path / "o", formats=("tflite",))
