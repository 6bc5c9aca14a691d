"""Layer pruning on SmolLM2: ranking, the pruned GGUF loads and generates, refusal when over budget."""
from __future__ import annotations

import json

import pytest

from edgellm.errors import BudgetNotMetError, EdgeLLMError
from edgellm.pruning import block_count, drop_layers, prune, rank_layers

CANDIDATES = (3, 15, 29)  # a few blocks keep the test short; the docs rank all 30


@pytest.mark.slow
def test_drop_layers_renumbers_blocks_and_generates(smollm2_gguf, tmp_path) -> None:
    import gguf

    import edgellm

    src = smollm2_gguf("Q4_0")
    out = drop_layers(src, tmp_path / "p.gguf", [4, 17])
    assert block_count(src) == 30 and block_count(out) == 28
    blocks = {int(t.name.split(".")[1]) for t in gguf.GGUFReader(str(out)).tensors if t.name.startswith("blk.")}
    assert blocks == set(range(28))
    assert out.stat().st_size < src.stat().st_size
    with edgellm.load(out, threads=1, n_ctx=128) as m:
        r = m.generate("The capital of France is", max_tokens=8, temperature=0.0)
    assert r.metrics.generated_tokens >= 1 and r.text.strip()
    with pytest.raises(EdgeLLMError):
        drop_layers(src, tmp_path / "bad.gguf", [30])


@pytest.mark.slow
def test_ranking_puts_last_layer_among_costliest(smollm2_gguf) -> None:
    ranking = rank_layers(smollm2_gguf("Q4_0"), max_tokens=48, candidates=CANDIDATES, threads=1)
    assert sorted(c.layer for c in ranking) == list(CANDIDATES)
    assert [c.kld for c in ranking] == sorted(c.kld for c in ranking)
    assert all(c.kld > 0 for c in ranking)
    assert ranking[-1].layer == 29  # the block feeding the output head matters most


@pytest.mark.slow
def test_prune_writes_artifact_within_budget(smollm2_artifact, tmp_path) -> None:
    import edgellm

    res = prune(smollm2_artifact("Q4_0"), tmp_path / "pruned", layers=1, max_kld=5.0, max_tokens=48,
                candidates=CANDIDATES, threads=1, measure_speed=False)
    assert len(res.dropped) == 1 and res.dropped[0] == res.ranking[0].layer
    assert res.size_after < res.size_before and res.kld > 0 and res.ppl_after > 0
    manifest = json.loads((tmp_path / "pruned" / "edgellm.json").read_text())
    assert manifest["extra"]["prune"]["dropped_layers"] == list(res.dropped)
    assert manifest["size_bytes"] == res.size_after
    with edgellm.load(tmp_path / "pruned", threads=1, n_ctx=64) as m:
        assert m.generate("Hello", max_tokens=4, temperature=0.0).metrics.generated_tokens >= 1


@pytest.mark.slow
def test_prune_refuses_when_budget_cannot_be_kept(smollm2_gguf, tmp_path) -> None:
    with pytest.raises(BudgetNotMetError) as exc:
        prune(smollm2_gguf("Q4_0"), tmp_path / "never", layers=[29], max_kld=0.01, max_tokens=48, threads=1,
              measure_speed=False)
    assert exc.value.table and exc.value.table[0]["dropped"] == [29] and exc.value.table[0]["kld"] > 0.01
    assert not (tmp_path / "never").exists()


def test_auto_needs_a_budget(tmp_path) -> None:
    with pytest.raises(EdgeLLMError, match="needs a quality budget"):
        prune(tmp_path / "absent.gguf", None, layers="auto")
