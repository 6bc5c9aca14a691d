"""Tokenizers llama.cpp must split exactly as `tokenizers` does: SentencePiece-style tokenizer.json (BPE + byte
fallback over "▁") -> llama.cpp SPM vocabulary -> back, and every named byte-level BPE pre-tokenizer.

llama.cpp's own SPM tokenizer must give the ids HF `tokenizers` gives on varied text (prose, code, digits,
emoji and CJK through byte fallback, accents, chat markup), in the Llama 2 shape (space prefix) and the Gemma
shape (none); the tokenizer.json rebuilt from the GGUF must too."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_reading import field_value, open_gguf
from edgellm.converters.gguf_to_hf import gguf_to_hf
from edgellm.errors import TokenizerError
from tests.converters.test_families import ROWS
from tests.fixtures.texts import VARIED
from tests.fixtures.tiny import make_family_model, train_spm_tokenizer

SHAPES = {"llama2": ("mistral", True), "gemma": ("gemma3", False)}   # shape -> (family row, space prefix)


@pytest.fixture(scope="module")
def spm_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """shape -> (HF folder, GGUF F32 file)."""
    root = tmp_path_factory.mktemp("spm")
    out = {}
    for shape, (family, prefix) in SHAPES.items():
        folder = make_family_model(root / shape / "model", ROWS[family], tokenizer=train_spm_tokenizer(prefix))
        out[shape] = (folder, convert_to_gguf(folder, root / shape / "gguf", "F32").path)
    return out


def _llama_ids(gguf: Path, text: str, special: bool = False) -> list[int]:
    from edgellm.runtimes.llama_native import open_llama  # the host's kernel policy, as edgellm.load

    llm = open_llama(gguf, vocab_only=True)
    try:
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
    finally:
        llm.close()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_gguf_holds_an_spm_vocabulary(shape: str, spm_models: dict[str, tuple[Path, Path]]) -> None:
    _, gguf = spm_models[shape]
    r = open_gguf(gguf)
    assert field_value(r, "tokenizer.ggml.model") == "llama"
    assert field_value(r, "tokenizer.ggml.add_space_prefix") is SHAPES[shape][1]
    types = list(field_value(r, "tokenizer.ggml.token_type"))
    assert types[0] == 2 and types[1] == types[2] == 3 and set(types[3:259]) == {6}   # unk, control, bytes
    assert len(list(field_value(r, "tokenizer.ggml.scores"))) == len(types)


@pytest.mark.parametrize("text", VARIED[:-1], ids=range(len(VARIED) - 1))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_llama_cpp_tokenizes_as_tokenizers_does(shape: str, text: str,
                                                spm_models: dict[str, tuple[Path, Path]]) -> None:
    folder, gguf = spm_models[shape]
    ours = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert ours == _llama_ids(gguf, text)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_tokenizer_rebuilt_from_gguf_matches_the_original(shape: str, spm_models: dict[str, tuple[Path, Path]],
                                                          tmp_path: Path) -> None:
    folder, gguf = spm_models[shape]
    back = gguf_to_hf(gguf, tmp_path / "back", dtype="F32")
    a = Tokenizer.from_file(str(folder / "tokenizer.json"))
    b = Tokenizer.from_file(str(back / "tokenizer.json"))
    for text in VARIED:
        ids = a.encode(text, add_special_tokens=False).ids
        assert b.encode(text, add_special_tokens=False).ids == ids, text[:40]
        assert b.decode(ids) == a.decode(ids)
    assert b.encode("hello").ids[0] == 1        # add_bos_token: <s> first
    assert json.loads((back / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizer"
    # and the rebuilt folder converts to the same vocabulary again
    again = convert_to_gguf(back, tmp_path / "again", "F32").path
    r1, r2 = open_gguf(gguf), open_gguf(again)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.add_space_prefix"):
        assert list(np.atleast_1d(field_value(r1, key))) == list(np.atleast_1d(field_value(r2, key))), key


def test_unsupported_spm_normalizer_is_refused(tmp_path: Path) -> None:
    tok = train_spm_tokenizer(True)
    tok["normalizer"] = {"type": "NFKC"}
    folder = make_family_model(tmp_path / "m", ROWS["llama"], tokenizer=tok)
    with pytest.raises(TokenizerError, match="NFKC"):
        convert_to_gguf(folder, tmp_path / "out", "F32")


@pytest.fixture(scope="module")
def bpe_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """pre-tokenizer name -> (HF folder with a tokenizer trained behind it, GGUF F32)."""
    from edgellm.converters.tokenizer import PRE_TOKENIZERS
    from tests.fixtures.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("bpe")
    out = {}
    for pre in PRE_TOKENIZERS:
        folder = make_family_model(root / pre / "model", ROWS["qwen3"], tokenizer=train_tokenizer(320, pre))
        out[pre] = (folder, convert_to_gguf(folder, root / pre / "gguf", "F32").path)
    return out


@pytest.mark.parametrize("pre", ["gpt-2", "smollm", "qwen2", "llama-bpe", "gpt-4o", "qwen35"])
def test_every_named_byte_level_pre_tokenizer_splits_as_llama_cpp_does(
        pre: str, bpe_models: dict[str, tuple[Path, Path]]) -> None:
    """The tokenizers pipeline each llama.cpp pre-tokenizer name stands for gives llama.cpp's ids on the varied
    text set (a tokenizer trained behind that pipeline; merges never cross its splits)."""
    folder, gguf = bpe_models[pre]
    assert field_value(open_gguf(gguf), "tokenizer.ggml.pre") == pre
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in VARIED:
        assert tok.encode(text, add_special_tokens=False).ids == _llama_ids(gguf, text, special=True), text[:40]
