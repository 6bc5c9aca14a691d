"""Unigram tokenizers (T5's pipeline, and Metaspace without a prefix) -> llama.cpp's UGM vocabulary ("t5"): llama.cpp
gives the ids the `tokenizers` library gives on the varied text set, the tokenizer.json rebuilt from the GGUF does
too, and pipelines llama.cpp cannot reproduce are refused with a TokenizerError.

The tokenizers are trained here with tokenizers' UnigramTrainer behind each pipeline; T5's has a Precompiled
normalizer whose charsmap (SentencePiece's double-array format, which both llama.cpp and tokenizers read) is
built below: whitespace controls to spaces as SentencePiece's nmt_nfkc does, plus a few NFKC-style folds."""
from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer

from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_reading import field_value, open_gguf
from edgellm.converters.gguf_to_hf import gguf_to_hf
from edgellm.converters.tokenizer_unigram import charsmap_lookup
from edgellm.errors import TokenizerError
from tests.converters.test_families import ROWS
from tests.fixtures.texts import PROSE, VARIED
from tests.fixtures.tiny import SPM_TEXT, make_family_model

FOLDS = {"\t": " ", "\n": " ", "\r": " ", "\u2026": "...", "\ufb01": "fi", "\uff21": "A", "\u00a0": " ", "\u3000": " "}
TEXTS = VARIED + ["Full\u2026width \uff21 and the \ufb01ne print\u00a0here", "tabs\t\tand\r\nCRLF  "]


def build_charsmap(folds: dict[str, str]) -> bytes:
    """A SentencePiece precompiled charsmap: u32 trie size, darts-clone double-array units, NUL-ended
    replacements. A unit: offset << 10 (XOR distance to its children's base), bit 8 has-leaf, low byte label;
    a key's value (replacement offset, bit 31 set) sits at its node's base (label 0)."""
    strings, trie = b"", {}
    for key, value in folds.items():
        node = trie
        for c in key.encode():
            node = node.setdefault(c, {})
        node[None] = len(strings)
        strings += value.encode() + b"\0"
    units, used, bases = [0] * 8192, {0}, set()

    def place(node: dict, idx: int) -> None:
        labels = [c for c in node if c is not None] + ([0] if None in node else [])
        base = 1
        while base in bases or any(base ^ c in used for c in labels):
            base += 1
        bases.add(base)
        used.update(base ^ c for c in labels)
        units[idx] |= (idx ^ base) << 10
        if None in node:
            units[idx] |= 1 << 8
            units[base] = (1 << 31) | node[None]
        for c, child in node.items():
            if c is not None:
                units[base ^ c] |= c
                place(child, base ^ c)

    place(trie, 0)
    units = units[: (max(used | bases) | 0xFF) + 1]     # every base ^ byte in bounds (tokenizers does not check)
    return struct.pack("<I", 4 * len(units)) + struct.pack(f"<{len(units)}I", *units) + strings


def train_unigram(shape: str, vocab: int = 300, **model_kw: object) -> dict:
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    if shape == "t5":
        tok.normalizer = normalizers.Sequence([normalizers.Precompiled(build_charsmap(FOLDS)),
                                               normalizers.Replace(Regex(" {2,}"), " ")])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Metaspace("\u2581", "always")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace("\u2581", "never")
    trainer = trainers.UnigramTrainer(vocab_size=vocab, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator([SPM_TEXT, PROSE], trainer=trainer)
    data = json.loads(tok.to_str())
    data["model"].update(model_kw)
    return data


SHAPES = ("t5", "no-prefix")


@pytest.fixture(scope="module")
def ugm_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """shape -> (HF folder, GGUF F32)."""
    root, out = tmp_path_factory.mktemp("ugm"), {}
    for shape in SHAPES:
        folder = make_family_model(root / shape / "model", ROWS["mistral"], tokenizer=train_unigram(shape))
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "add_bos_token": False}))
        out[shape] = (folder, convert_to_gguf(folder, root / shape / "gguf", "F32").path)
    return out


def _llama_ids(gguf: Path, text: str) -> list[int]:
    from edgellm.runtimes.llama_native import open_llama

    llm = open_llama(gguf, vocab_only=True)
    try:
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    finally:
        llm.close()


def test_the_charsmap_is_read_as_llama_cpp_and_tokenizers_read_it() -> None:
    blob = build_charsmap(FOLDS)
    assert charsmap_lookup(blob, "\u2026 rest".encode()) == (3, b"...")
    assert charsmap_lookup(blob, b"\tx") == (1, b" ") and charsmap_lookup(blob, b"plain") is None
    from tokenizers import normalizers

    assert normalizers.Precompiled(blob).normalize_str("a\tb\u2026\uff21") == "a b...A"


@pytest.mark.parametrize("shape", SHAPES)
def test_gguf_holds_a_ugm_vocabulary(shape: str, ugm_models: dict[str, tuple[Path, Path]]) -> None:
    folder, gguf = ugm_models[shape]
    r = open_gguf(gguf)
    assert field_value(r, "tokenizer.ggml.model") == "t5" and field_value(r, "tokenizer.ggml.pre") == "default"
    assert field_value(r, "tokenizer.ggml.add_space_prefix") is (shape == "t5")
    assert field_value(r, "tokenizer.ggml.remove_extra_whitespaces") is (shape == "t5")
    charsmap = field_value(r, "tokenizer.ggml.precompiled_charsmap")
    assert (bytes(bytearray(int(b) & 0xFF for b in charsmap)) == build_charsmap(FOLDS)) if shape == "t5" else \
        charsmap is None
    types, scores = list(field_value(r, "tokenizer.ggml.token_type")), list(field_value(r, "tokenizer.ggml.scores"))
    pieces = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    assert types[:3] == [3, 3, 2] and set(types[3:len(pieces)]) == {1} and set(types[len(pieces):]) <= {5}
    assert np.allclose(scores[3:len(pieces)], [s for _, s in pieces[3:]])


@pytest.mark.parametrize("shape", SHAPES)
def test_llama_cpp_tokenizes_as_tokenizers_does(shape: str, ugm_models: dict[str, tuple[Path, Path]]) -> None:
    folder, gguf = ugm_models[shape]
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    same, total, unk = 0, 0, 0
    for text in TEXTS:
        ours = tok.encode(text, add_special_tokens=False).ids
        theirs = _llama_ids(gguf, text)
        assert theirs == ours, (text[:40], ours[:20], theirs[:20])
        same, total, unk = same + 1, total + len(ours), unk + ours.count(2)
    print(f"\n{shape}: {same}/{len(TEXTS)} texts, {total} ids identical ({unk} <unk>)")
    assert unk > 0      # emoji and CJK are outside the trained pieces: the unknown path is exercised


@pytest.mark.parametrize("shape", SHAPES)
def test_tokenizer_rebuilt_from_gguf_matches_the_original(shape: str, ugm_models: dict[str, tuple[Path, Path]],
                                                          tmp_path: Path) -> None:
    folder, gguf = ugm_models[shape]
    back = gguf_to_hf(gguf, tmp_path / "back", dtype="F32")
    a, b = (Tokenizer.from_file(str(f / "tokenizer.json")) for f in (folder, back))
    for text in TEXTS:
        ids = a.encode(text, add_special_tokens=False).ids
        assert b.encode(text, add_special_tokens=False).ids == ids, text[:40]
    assert json.loads((back / "tokenizer_config.json").read_text())["tokenizer_class"] == "T5Tokenizer"
    again = open_gguf(convert_to_gguf(back, tmp_path / "again", "F32").path)
    for key in ("tokens", "token_type", "scores", "add_space_prefix", "remove_extra_whitespaces"):
        x, y = (np.atleast_1d(field_value(r, f"tokenizer.ggml.{key}")) for r in (open_gguf(gguf), again))
        assert list(x) == list(y), key


def _refused(tmp_path: Path, data: dict, match: str) -> None:
    folder = make_family_model(tmp_path / "m", ROWS["mistral"], tokenizer=data)
    with pytest.raises(TokenizerError, match=match):
        convert_to_gguf(folder, tmp_path / "out", "F32")
    assert not (tmp_path / "out").exists()


def test_byte_fallback_unigram_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, train_unigram("no-prefix", byte_fallback=True), "byte fallback")


def test_metaspace_prefix_without_whitespace_removal_is_refused(tmp_path: Path) -> None:
    data = train_unigram("no-prefix")
    data["pre_tokenizer"]["prepend_scheme"] = "always"      # HF "▁a" vs SentencePiece "▁▁a" for " a"
    _refused(tmp_path, data, "leading and repeated spaces")


def test_whitespace_split_needs_a_charsmap_that_folds_newlines(tmp_path: Path) -> None:
    data = train_unigram("t5")
    data["normalizer"]["normalizers"][0]["precompiled_charsmap"] = base64.b64encode(
        build_charsmap({"\u2026": "..."})).decode()
    _refused(tmp_path, data, "tabs and newlines")
    data["normalizer"]["normalizers"][0]["precompiled_charsmap"] = base64.b64encode(b"\x08\x00\x00\x00junk").decode()
    _refused(tmp_path / "2", data, "charsmap")


def test_a_folder_with_a_damaged_tokenizer_model_and_no_tokenizer_json_is_refused_with_a_hint(tmp_path: Path) -> None:
    from edgellm.errors import EdgeLLMError

    folder = make_family_model(tmp_path / "m", ROWS["mistral"])
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.model").write_bytes(b"\x0a\x05\x0a\x01a\x15\x00\x00\x00\x00")
    with pytest.raises(EdgeLLMError, match="tokenizer") as info:
        convert_to_gguf(folder, tmp_path / "out", "F32")
    assert info.value.hint
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.gguf"))


# -- tokenizer.model (SentencePiece ModelProto) ------------------------------------------------------------------
def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = b""
    while True:
        out += bytes([(v & 0x7F) | (0x80 if v > 0x7F else 0)])
        v >>= 7
        if not v:
            return out


def _field(num: int, value: object) -> bytes:
    if isinstance(value, bool) or isinstance(value, int):
        return _varint(num << 3) + _varint(int(value))
    if isinstance(value, float):
        return _varint(num << 3 | 5) + struct.pack("<f", value)
    data = value.encode() if isinstance(value, str) else bytes(value)   # type: ignore[arg-type]  # the remaining values are bytes-like by construction
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def sentencepiece_model(tokens: list[str], scores: list[float], types: list[int], model_type: int, unk: int,
                        charsmap: bytes | None, prefix: bool, remove_extra: bool) -> bytes:
    """A tokenizer.model as sentencepiece writes it (the fields llama.cpp's converter reads)."""
    pieces = b"".join(_field(1, _field(1, t) + _field(2, float(s)) + _field(3, k))
                      for t, s, k in zip(tokens, scores, types))
    trainer = _field(3, model_type) + _field(40, unk) + _field(41, -1) + _field(42, 1) + _field(43, 0)
    normalizer = _field(1, "nmt_nfkc") + (_field(2, charsmap) if charsmap else b"") + _field(3, prefix) + \
        _field(4, remove_extra) + _field(5, True)
    return pieces + _field(2, trainer) + _field(3, normalizer)


@pytest.mark.parametrize("shape", ["t5", "spm-bpe"])
def test_tokenizer_model_gives_the_vocabulary_tokenizer_json_gives(shape: str, tmp_path: Path) -> None:
    """The same tokenizer as tokenizer.model and as tokenizer.json (whose GGUF vocabulary llama.cpp tokenizes as
    `tokenizers` does, above and in test_spm_tokenizer.py) gives the same GGUF vocabulary."""
    from edgellm.converters.tokenizer import vocab_from_tokenizer_json
    from edgellm.converters.tokenizer_sentencepiece import read_sentencepiece
    from tests.fixtures.tiny import train_spm_tokenizer

    data = train_unigram("t5") if shape == "t5" else train_spm_tokenizer(True)
    cfg = {"eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": shape != "t5"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    want = vocab_from_tokenizer_json(tmp_path / "tokenizer.json", 384, cfg)
    n = len(data["model"]["vocab"])
    (tmp_path / "tokenizer.model").write_bytes(sentencepiece_model(
        want.tokens[:n], list(want.scores[:n]), want.token_types[:n], 1 if shape == "t5" else 2,
        want.special_ids["unk"], want.precompiled_charsmap, bool(want.add_space_prefix),
        bool(want.remove_extra_whitespaces)))
    got = read_sentencepiece(tmp_path / "tokenizer.model", 384, cfg)
    assert (got.model, got.pre, got.tokens, got.token_types) == (want.model, want.pre, want.tokens, want.token_types)
    assert np.array_equal(np.float32(got.scores), np.float32(want.scores))
    assert (got.add_space_prefix, got.remove_extra_whitespaces, got.precompiled_charsmap, got.add_bos) == \
        (want.add_space_prefix, want.remove_extra_whitespaces, want.precompiled_charsmap, want.add_bos)
    assert got.special_ids["unk"] == want.special_ids["unk"] and got.special_ids["eos"] == want.special_ids["eos"]
    # chat tokens a tokenizer_config.json adds past the pieces (Phi-3's <|user|>, ...) join the vocabulary
    extra = {**cfg, "added_tokens_decoder": {str(n): {"content": "<|user|>", "special": True},
                                             str(n + 1): {"content": "<|tool|>", "special": False}}}
    got = read_sentencepiece(tmp_path / "tokenizer.model", 384, extra)
    assert got.tokens[n:n + 2] == ["<|user|>", "<|tool|>"] and got.token_types[n:n + 3] == [3, 4, 5]


@pytest.mark.parametrize("damage", [b"\xff" * 8, b"\x0a\xff\x7f", b"\x0f", b""])
def test_a_damaged_tokenizer_model_is_a_tokenizer_error(damage: bytes, tmp_path: Path) -> None:
    from edgellm.converters.tokenizer_sentencepiece import read_sentencepiece

    (tmp_path / "tokenizer.model").write_bytes(damage)
    with pytest.raises(TokenizerError):
        read_sentencepiece(tmp_path / "tokenizer.model", 384, {})


def test_a_folder_with_only_tokenizer_model_converts_and_llama_cpp_tokenizes_as_tokenizers_does(
        tmp_path: Path) -> None:
    """Llama 2 / Mistral v0.1-era folders ship only tokenizer.model: the GGUF built from it tokenizes the varied
    text set exactly as `tokenizers` does with the equivalent tokenizer.json."""
    from edgellm.converters.tokenizer import vocab_from_tokenizer_json
    from tests.fixtures.tiny import train_spm_tokenizer

    folder = make_family_model(tmp_path / "m" / "model", ROWS["mistral"], tokenizer=train_spm_tokenizer(True))
    tok_json = folder / "tokenizer.json"
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    want = vocab_from_tokenizer_json(tok_json, json.loads((folder / "config.json").read_text())["vocab_size"], cfg)
    n = len(json.loads(tok_json.read_text())["model"]["vocab"])
    (folder / "tokenizer.model").write_bytes(sentencepiece_model(
        want.tokens[:n], list(want.scores[:n]), want.token_types[:n], 2, want.special_ids["unk"],
        want.precompiled_charsmap, bool(want.add_space_prefix), bool(want.remove_extra_whitespaces)))
    reference = Tokenizer.from_file(str(tok_json))
    tok_json.unlink()
    gguf = convert_to_gguf(folder, tmp_path / "out", "F32").path
    for text in TEXTS:
        assert _llama_ids(gguf, text) == reference.encode(text, add_special_tokens=False).ids, text
