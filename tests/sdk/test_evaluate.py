"""Perplexity / KLD / top-1 on SmolLM2: identical artifacts agree exactly, quantization costs measurable KLD."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from edgellm.errors import EvaluationError
from edgellm.evaluation import default_text, evaluate, format_table, windows


def test_default_text_is_built_from_installed_docstrings() -> None:
    text = default_text(min_chars=3000)
    assert len(text) >= 3000
    import argparse
    import inspect

    assert inspect.getdoc(argparse).strip() in text  # assembled at run time, not stored in the repo
    assert default_text(min_chars=3000) == text      # deterministic: the same text for every artifact


def test_windows_cover_every_token_once_with_bos() -> None:
    ids = [1] + list(range(100, 130))
    wins = list(windows(ids, 8, bos=1))
    assert all(w[0] == 1 and len(w) <= 8 for w in wins)
    assert [t for w in wins for t in w[1:]] == ids[1:]
    with pytest.raises(EvaluationError):
        list(windows(ids, 2, bos=1))


@pytest.mark.slow
def test_self_reference_has_zero_kld_and_full_agreement(smollm2_gguf) -> None:
    q8 = smollm2_gguf("Q8_0")
    events = []
    r = evaluate(q8, q8, max_tokens=100, n_ctx=64, threads=1, progress=events.append)
    # progress: the reference stage then the scoring stage, each counted in scored tokens up to its total
    stages = [e.stage for e in events if e.finished]
    assert stages == [f"reference {q8.name}", f"scoring {q8.name}"]
    last = [e for e in events if e.finished][-1]
    assert last.done == last.total == r.tokens and last.unit == "tokens" and "PPL" in last.message
    assert [e.done for e in events if e.stage == stages[1]] == sorted(e.done for e in events if e.stage == stages[1])
    assert r.windows == 2 and r.tokens == 99 - 1  # BOS + 99 body tokens, two windows each lose one target
    assert r.kld_mean == pytest.approx(0.0, abs=1e-6) and r.top1 == 1.0
    assert r.ppl == pytest.approx(r.ref_ppl, rel=1e-6) and abs(r.ppl_increase) < 1e-6
    assert 1.5 < r.ppl < 200  # a trained model on English prose, not a random one (ppl ~ 49152)


@pytest.mark.slow
def test_quantization_ladder_orders_by_kld(smollm2_gguf) -> None:
    ref = smollm2_gguf("F16")
    text = default_text(min_chars=1500)
    q8 = evaluate(smollm2_gguf("Q8_0"), ref, text=text, max_tokens=128, n_ctx=128, threads=1)
    q4 = evaluate(smollm2_gguf("Q4_0"), ref, text=text, max_tokens=128, n_ctx=128, threads=1)
    assert 0 < q8.kld_mean < q4.kld_mean
    assert q8.top1 > q4.top1 and q8.top1 > 0.9
    assert math.isfinite(q4.ppl) and q4.ppl_increase > q8.ppl_increase
    table = format_table([q8, q4], ["Q8_0", "Q4_0"])
    assert "| Q4_0 |" in table and f"{q4.kld_mean:.5f}" in table


@pytest.mark.slow
def test_eval_cli_prints_table(smollm2_gguf, capsys) -> None:
    from edgellm.cli import main

    q4 = str(smollm2_gguf("Q4_0"))
    assert main(["eval", q4, "--reference", q4, "--max-tokens", "64", "--n-ctx", "64", "--threads", "1", "--markdown"]) == 0
    captured = capsys.readouterr()
    assert "| artifact |" in captured.out and "100.00 %" in captured.out
    # progress goes to stderr, the table alone to stdout; the reference is scored once
    done = [line for line in captured.err.splitlines() if line.endswith(" done")]
    assert [line.split(":")[0] for line in done] == [f"reference {Path(q4).name}", f"scoring {Path(q4).name}"]
    assert "scoring " not in captured.out
