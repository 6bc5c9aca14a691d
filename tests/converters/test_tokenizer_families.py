"""Each family with the tokenizer kind its real checkpoints ship, in a tiny model of that family (llama.cpp keys some
vocabulary behaviour on the architecture and general.name): the GGUF names the llama.cpp tokenizer model and
pre-tokenizer that splits like the checkpoint's tokenizer.json, and llama.cpp gives the `tokenizers` library's ids
on the varied text set (prose, code, digits, emoji, CJK, chat markup with specials parsed).

The tokenizers are trained offline behind the pipeline each family's tokenizer.json declares (the real files are
not reachable here, except SmolLM2's and Gemma 3's, which tests/converters/test_real_model.py and
test_gemma3_real.py check against llama.cpp on the real vocabularies)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from tokenizers import Tokenizer

from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_reading import field_value, open_gguf
from tests.converters.test_families import ROWS
from tests.fixtures.texts import VARIED
from tests.fixtures.tiny import make_family_model, train_spm_tokenizer, train_tokenizer

# family (a ROWS config) -> (tokenizer.json builder, llama.cpp tokenizer model, llama.cpp pre-tokenizer)
KINDS: dict[str, tuple[str, Callable[[], dict], str, str]] = {
    "qwen3": ("qwen3", lambda: train_tokenizer(320, "qwen2"), "gpt2", "qwen2"),            # Qwen2/2.5/3
    "qwen3.5": ("qwen35", lambda: train_tokenizer(320, "qwen35"), "gpt2", "qwen35"),
    "llama3": ("llama", lambda: train_tokenizer(320, "llama-bpe"), "gpt2", "llama-bpe"),     # Llama 3.x
    "llama2": ("llama", lambda: train_spm_tokenizer(True), "llama", "default"),             # Llama 2, TinyLlama
    "mistral": ("mistral", lambda: train_spm_tokenizer(True), "llama", "default"),          # Mistral v0.1-v0.3
    "gemma2": ("gemma2", lambda: train_spm_tokenizer(False), "llama", "default"),
    "gemma3": ("gemma3", lambda: train_spm_tokenizer(False), "llama", "default"),
    "phi3": ("phi3", lambda: train_spm_tokenizer(True), "llama", "default"),                # Phi-3, Phi-3.5
    "phi4-mini": ("phi3", lambda: train_tokenizer(320, "gpt-4o"), "gpt2", "gpt-4o"),        # o200k split
    "smollm3": ("smollm3", lambda: train_tokenizer(320, "llama-bpe"), "gpt2", "llama-bpe"),  # Llama 3's
    "granite": ("granite", lambda: train_tokenizer(320, "smollm"), "gpt2", "smollm"),       # digits + GPT-2 regex
    "olmo2": ("olmo2", lambda: train_tokenizer(320, "llama-bpe"), "gpt2", "llama-bpe"),     # cl100k regex
}


@pytest.fixture(scope="module")
def family_ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root, out = tmp_path_factory.mktemp("famtok"), {}
    for kind, (row, build, _, _) in KINDS.items():
        cfg = dict(ROWS[row])
        if kind == "llama2":
            cfg["rope_scaling"] = None           # Llama 2: no llama3 RoPE
        folder = make_family_model(root / kind / "model", cfg, tokenizer=build())
        out[kind] = (folder, convert_to_gguf(folder, root / kind / "gguf", "F32").path)
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_family_tokenizer_gives_llama_cpp_the_same_ids(kind: str, family_ggufs: dict[str, tuple[Path, Path]]) -> None:
    from edgellm.runtimes.llama_native import open_llama

    folder, gguf = family_ggufs[kind]
    _, _, model, pre = KINDS[kind]
    r = open_gguf(gguf)
    assert (field_value(r, "tokenizer.ggml.model"), field_value(r, "tokenizer.ggml.pre")) == (model, pre)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    llm = open_llama(gguf, vocab_only=True)
    try:
        n = 0
        for text in VARIED:
            want = tok.encode(text, add_special_tokens=False).ids
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == want, text[:40]
            n += len(want)
    finally:
        llm.close()
    print(f"\n{kind}: {len(VARIED)} texts, {n} ids identical ({model}/{pre})")
