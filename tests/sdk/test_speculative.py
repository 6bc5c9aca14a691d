"""Prompt-lookup speculative decoding (llama.cpp runtime): off by default, and at temperature 0 it must
produce exactly the tokens plain greedy decoding produces."""
from __future__ import annotations

import pytest

EDIT_TEXT = ("The old lighthouse stood on the northern cliff for two hundred years. Every night the keeper "
             "climbed the spiral stairs, trimmed the wick, and polished the great lens until it shone. Ships "
             "passing the rocks saw the beam and turned away from danger.")
EDIT_PROMPT = f"Repeat the following text exactly, but replace the word 'keeper' with 'guardian':\n\n{EDIT_TEXT}"


def _greedy(path, prompt: str, max_tokens: int, **options):
    import edgellm

    with edgellm.load(path, threads=1, n_ctx=512, **options) as m:
        return m.chat([{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("prompt", [EDIT_PROMPT, "Name three colours and say why people like them."],
                         ids=["repetitive-edit", "open-question"])
def test_prompt_lookup_matches_greedy_tokens(smollm2_gguf, prompt: str) -> None:
    path = smollm2_gguf("Q8_0")
    plain = _greedy(path, prompt, 48)
    spec = _greedy(path, prompt, 48, speculative="prompt-lookup", num_pred_tokens=10)
    assert plain.metrics.generated_tokens >= 10
    assert spec.tokens == plain.tokens and spec.text == plain.text


@pytest.mark.slow
def test_speculative_is_off_by_default(smollm2_gguf) -> None:
    import edgellm

    with edgellm.load(smollm2_gguf("Q8_0"), threads=1, n_ctx=128) as m:
        assert getattr(m.runtime._llm, "draft_model", None) is None
    with edgellm.load(smollm2_gguf("Q8_0"), threads=1, n_ctx=128, speculative="prompt-lookup") as m:
        assert m.runtime._llm.draft_model is not None


@pytest.mark.slow
def test_edit_task_copies_the_text(smollm2_gguf) -> None:
    """The repetitive task really is repetitive for this model: the reply reuses long runs of the prompt."""
    out = _greedy(smollm2_gguf("Q8_0"), EDIT_PROMPT, 48, speculative="prompt-lookup", num_pred_tokens=10).text
    assert "lighthouse stood on the northern cliff" in out
