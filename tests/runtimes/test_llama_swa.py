"""Windowed KV cache for sliding-window layers (llama.cpp swa_full=False, edgellm's default): a tiny Gemma 3 whose
window (8) and batch (32) are far smaller than the prompts, so cells really are dropped; every answer must equal
the one a fresh model gives, whether the runtime continues from its cached prefix or has to start again."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgellm
from edgellm.converters.gguf import convert_to_gguf
from edgellm.errors import OptionError
from edgellm.runtimes.base import SamplingParams
from edgellm.runtimes.options import LlamaCppOptions
from tests.converters.test_families import ROWS
from tests.fixtures.tiny import make_family_model

GREEDY = SamplingParams(max_tokens=1, temperature=0.0)


@pytest.fixture(scope="module")
def gemma3_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("swa")
    config = {**ROWS["gemma3"], "sliding_window": 8, "max_position_embeddings": 2048}
    folder = make_family_model(root / "hf", config, seed=3)
    return convert_to_gguf(folder, root / "gguf", "F32").path


def _prompt(seed: int, n: int) -> list[int]:
    return [3 + (seed * 7919 + i * 104729) % 300 for i in range(n)]


def _first_logits(rt: Any, prompt: list[int]) -> np.ndarray:
    """The logits the runtime samples the first answer token from (the context's last row)."""
    steps = rt.generate(prompt, GREEDY)
    next(steps)
    row = np.ctypeslib.as_array(rt._llm._ctx.get_logits_ith(-1), shape=(rt.n_vocab,)).copy()
    steps.close()
    return row


def test_windowed_cache_answers_as_a_fresh_model(gemma3_gguf: Path) -> None:
    a = _prompt(1, 400)
    deep = a[:100] + _prompt(2, 60)          # shares 100 tokens: far behind what the window still holds
    extended = a + _prompt(3, 20)            # extends the cached prompt: nothing to roll back
    expected = {}
    with edgellm.load(gemma3_gguf, n_ctx=1024, n_batch=32, swa_full=True) as model:
        for name, p in (("a", a), ("deep", deep), ("extended", extended)):
            model.runtime._llm.reset()
            expected[name] = _first_logits(model.runtime, p)
    with edgellm.load(gemma3_gguf, n_ctx=1024, n_batch=32) as model:
        rt = model.runtime
        assert rt._llm.context_params.swa_full is False and rt._swa_window == 8
        np.testing.assert_allclose(_first_logits(rt, a), expected["a"], atol=1e-4)
        # the window has moved on: the cache no longer holds position 100 - 8, so the prefix is evaluated again
        # (continuing from it instead moves these logits by ~0.2, measured)
        assert not rt._window_holds_prefix(deep)
        np.testing.assert_allclose(_first_logits(rt, deep), expected["deep"], atol=1e-4)
        _first_logits(rt, a)
        assert rt._window_holds_prefix(extended)      # continues from the cache
        np.testing.assert_allclose(_first_logits(rt, extended), expected["extended"], atol=1e-4)


def test_swa_full_option() -> None:
    assert LlamaCppOptions().llama_kwargs()["swa_full"] is False
    assert LlamaCppOptions(swa_full=True).llama_kwargs()["swa_full"] is True
    assert LlamaCppOptions(speculative="prompt-lookup").llama_kwargs()["swa_full"] is True
    with pytest.raises(OptionError, match="speculative"):
        LlamaCppOptions(speculative="prompt-lookup", swa_full=False)
    with pytest.raises(OptionError, match="swa_full"):
        LlamaCppOptions(swa_full="no")  # type: ignore[arg-type]  # a wrong type on purpose
