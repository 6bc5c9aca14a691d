"""Tokenizer translation between HF tokenizer.json and GGUF's tokenizer.ggml.* keys (byte-level BPE).

The pre-tokenizer is the subtle part: llama.cpp names it (`tokenizer.ggml.pre`) and applies its own
regexes, HF describes it as a tokenizers pipeline. The table below pairs each llama.cpp name with the
tokenizers pipeline it stands for; we fingerprint a tokenizer.json against it. An unrecognised
pipeline is an error unless the caller names the pre-tokenizer knowingly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TokenizerError
from .limits import MAX_TOKENIZER_BYTES, check_tokenizer_json, load_json
from .tokenizer_spm import add_space_prefix, is_byte_token, is_spm, merge_scores, spm_tokenizer_json
from .tokenizer_unigram import unigram_pipeline, unigram_tokenizer_json, unigram_tokens

_GPT2_REGEX = None  # the ByteLevel pre-tokenizer's built-in GPT-2 regex (use_regex=True)
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(use_regex: bool) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split(regex: str) -> dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


# llama.cpp pre-tokenizer name -> the tokenizers pre_tokenizer pipeline it implements.
# Rows from llama.cpp's vocab: gpt-2 (GPT-2), smollm (SmolLM/SmolLM2), qwen2 (Qwen2/2.5/Qwen3), llama-bpe (Llama 3,
# SmolLM3), gpt-4o (Phi-4-mini, Llama 4: the o200k pattern), qwen35 (Qwen3.5: marks join letters).
PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "gpt-2": _byte_level(True),
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, _byte_level(True)]},
    "qwen2": {"type": "Sequence", "pretokenizers": [_split(_QWEN2_REGEX), _byte_level(False)]},
    "llama-bpe": {"type": "Sequence", "pretokenizers": [_split(_LLAMA3_REGEX), _byte_level(False)]},
    "gpt-4o": {"type": "Sequence", "pretokenizers": [_split(_GPT4O_REGEX), _byte_level(False)]},
    "qwen35": {"type": "Sequence", "pretokenizers": [_split(_QWEN35_REGEX), _byte_level(False)]},
}

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


def _fingerprint(pre: Any) -> Any:
    """Reduce a pre_tokenizer config to what changes how text is split."""
    if not isinstance(pre, dict):
        return None
    kind = pre.get("type")
    if kind == "Sequence":
        return ("Sequence", tuple(_fingerprint(p) for p in pre.get("pretokenizers", [])))
    if kind == "ByteLevel":
        return ("ByteLevel", bool(pre.get("use_regex", True)), bool(pre.get("add_prefix_space", False)))
    if kind == "Digits":
        return ("Digits", bool(pre.get("individual_digits", False)))
    if kind == "Split":
        pattern = pre.get("pattern", {})
        return ("Split", pattern.get("Regex", pattern.get("String")), pre.get("behavior"), bool(pre.get("invert")))
    return (kind,)


_FINGERPRINTS = {_fingerprint(cfg): name for name, cfg in PRE_TOKENIZERS.items()}


def detect_pre_tokenizer(tokenizer: dict[str, Any]) -> str | None:
    try:
        return _FINGERPRINTS.get(_fingerprint(tokenizer.get("pre_tokenizer")))
    except (TypeError, AttributeError):   # lists or numbers where the pipeline has strings: no known name
        return None


@dataclass(frozen=True)
class GGUFVocab:
    """What GGUF's tokenizer.ggml.* keys hold for a byte-level BPE tokenizer."""
    model: str                      # "gpt2"
    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]               # "left right"
    special_ids: dict[str, int]     # bos/eos/unk/pad/... -> id
    add_bos: bool
    add_eos: bool
    scores: list[float] | None = None       # SPM ("llama"): merge priority per token; UGM ("t5"): log-probability
    add_space_prefix: bool | None = None    # SPM, UGM: "▁" before the text
    remove_extra_whitespaces: bool | None = None   # UGM: whitespace runs collapse to one "▁" (T5)
    precompiled_charsmap: bytes | None = None      # UGM: SentencePiece's normalization map


def _special_id(content: str | None, vocab: dict[str, int]) -> int | None:
    return vocab.get(content) if content else None


def vocab_from_tokenizer_json(path: Path, vocab_size: int, tokenizer_config: dict[str, Any],
                              pre_tokenizer: str | None = None,
                              specials: dict[str, str | None] | None = None) -> GGUFVocab:
    """Read tokenizer.json (byte-level BPE) into GGUF vocabulary data.

    `vocab_size` is the model's embedding rows; the token list is padded to it as llama.cpp does.
    `pre_tokenizer` overrides detection: only pass it when you know the model's pre-tokenizer.
    """
    tok = load_json(path, max_bytes=MAX_TOKENIZER_BYTES, error=TokenizerError)
    model = tok.get("model") if isinstance(tok, dict) else None
    ugm = isinstance(model, dict) and model.get("type") == "Unigram"
    pieces: list[str] = []
    if ugm:   # [piece, score] pairs in id order: validated as the {piece: id} object the check knows
        pieces, ugm_scores, ugm_unk = unigram_tokens(tok, str(path))
        if len(set(pieces)) != len(pieces):
            raise TokenizerError(f"{path}: the Unigram vocabulary repeats a piece")
        check_tokenizer_json({**tok, "model": {**dict(model or {}), "vocab": {t: i for i, t in enumerate(pieces)}}},
                             vocab_size, str(path))
        space_prefix, remove_extra, charsmap = unigram_pipeline(tok, str(path))
    else:
        check_tokenizer_json(tok, vocab_size, str(path))   # ids bounded by vocab_size before any list is built
    model = tok["model"]
    spm = is_spm(tok)
    if model.get("type") != "BPE" and not ugm:
        raise TokenizerError(
            f"{path}: {model.get('type')} tokenizers cannot be exported to GGUF; byte-level BPE, SentencePiece-style "
            "BPE (byte fallback) and Unigram can", "WordPiece (BERT) vocabularies are for encoders, not chat models")
    pre = "default" if spm or ugm else pre_tokenizer or detect_pre_tokenizer(tok)
    if pre is None:
        raise TokenizerError(
            f"{path}: pre-tokenizer {json.dumps(tok.get('pre_tokenizer'))[:200]} is not one llama.cpp knows "
            f"under a name edgellm recognises ({', '.join(PRE_TOKENIZERS)})",
            "llama.cpp would split text differently from the model's training; pass --pre-tokenizer NAME "
            "only if you know which llama.cpp pre-tokenizer matches")
    vocab: dict[str, int] = {t: i for i, t in enumerate(pieces)} if ugm else dict(model["vocab"])
    added = tok.get("added_tokens") or []
    for a in added:
        vocab[a["content"]] = int(a["id"])
    n = max(vocab_size, max(vocab.values()) + 1)
    tokens: list[str | None] = [None] * n
    types = [TOKEN_NORMAL] * n
    for text, idx in vocab.items():
        tokens[idx] = text
    if spm:
        for i, t in enumerate(tokens):
            if t is not None and is_byte_token(t):
                types[i] = TOKEN_BYTE
    for a in added:
        types[int(a["id"])] = TOKEN_CONTROL if a.get("special") else TOKEN_USER_DEFINED
    unk = vocab.get(model.get("unk_token") or "") if spm else ugm_unk if ugm else None
    if unk is not None:
        types[unk] = TOKEN_UNKNOWN
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = f"[PAD{i}]"
            types[i] = TOKEN_UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    scores = None
    if spm:
        by_text = merge_scores(dict(model["vocab"]), merges)
        scores = [by_text.get(str(t), 0.0) if k == TOKEN_NORMAL else 0.0 for t, k in zip(tokens, types)]
        merges = []
    if ugm:
        scores = [ugm_scores[i] if i < len(pieces) and k in (TOKEN_NORMAL, TOKEN_USER_DEFINED) else 0.0
                  for i, k in enumerate(types)]
        merges = []
    names = specials or {}
    special_ids: dict[str, int] = {}
    for key in ("bos", "eos", "unk", "pad", "sep", "mask"):
        content = names.get(key)
        if content is None:
            value = tokenizer_config.get(f"{key}_token")
            content = value.get("content") if isinstance(value, dict) else value
        found = _special_id(content, vocab)
        if found is not None:
            special_ids[key] = found
    if ugm and unk is not None:
        special_ids.setdefault("unk", unk)
    return GGUFVocab("t5" if ugm else "llama" if spm else "gpt2", pre, [str(t) for t in tokens], types, merges,
                     special_ids, add_bos=bool(tokenizer_config.get("add_bos_token", False)),
                     add_eos=bool(tokenizer_config.get("add_eos_token", False)), scores=scores,
                     add_space_prefix=space_prefix if ugm else add_space_prefix(tok, str(path)) if spm else None,
                     remove_extra_whitespaces=remove_extra if ugm else None,
                     precompiled_charsmap=charsmap if ugm else None)


def tokenizer_json_from_vocab(v: GGUFVocab) -> dict[str, Any]:
    """Build an HF tokenizer.json dict from GGUF vocabulary data (the inverse of the above)."""
    if v.model not in ("gpt2", "llama", "t5"):
        raise TokenizerError(f"GGUF tokenizer model {v.model!r} cannot be rebuilt yet; only 'gpt2' (byte-level "
                             "BPE), 'llama' (SentencePiece BPE) and 't5' (Unigram)")
    if v.model == "gpt2" and v.pre not in PRE_TOKENIZERS:
        raise TokenizerError(f"GGUF pre-tokenizer {v.pre!r} has no known tokenizers equivalent; "
                             f"known: {', '.join(PRE_TOKENIZERS)}")
    added, base = [], {}
    for i, (text, kind) in enumerate(zip(v.tokens, v.token_types)):
        if kind in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
            added.append({"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": kind == TOKEN_USER_DEFINED, "special": kind == TOKEN_CONTROL})
        if kind != TOKEN_UNUSED:
            base[text] = i
    post: dict[str, Any] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True}
    bos = v.special_ids.get("bos")
    if v.add_bos and bos is not None:
        bos_text = v.tokens[bos]
        post = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos_text: {"id": bos_text, "ids": [bos], "tokens": [bos_text]}}}
    if v.model == "t5":
        if v.scores is None or len(v.scores) != len(v.tokens):
            raise TokenizerError("the GGUF's Unigram vocabulary has no tokenizer.ggml.scores")
        ugm_post = None if post.get("type") == "ByteLevel" else post
        used = max((i for i, k in enumerate(v.token_types) if k != TOKEN_UNUSED), default=-1) + 1
        return unigram_tokenizer_json(v.tokens, v.scores, v.special_ids.get("unk"), added, ugm_post,
                                      bool(v.add_space_prefix), bool(v.remove_extra_whitespaces),
                                      v.precompiled_charsmap, used)
    if v.model == "llama":
        if v.scores is None or len(v.scores) != len(v.tokens):
            raise TokenizerError("the GGUF's SentencePiece vocabulary has no tokenizer.ggml.scores")
        spm_post = None if post.get("type") == "ByteLevel" else post
        return spm_tokenizer_json(v.tokens, v.token_types, v.scores, bool(v.add_space_prefix),
                                  v.special_ids.get("unk"), added, spm_post, (TOKEN_NORMAL,))
    merges = [m.split(" ", 1) for m in v.merges]
    for m in merges:   # the tokenizers library raises a bare Exception on a merge outside the vocabulary
        if len(m) != 2 or m[0] not in base or m[1] not in base or m[0] + m[1] not in base:
            raise TokenizerError(f"the GGUF's merge {' '.join(m)[:60]!r} names tokens outside its vocabulary")
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[v.pre], "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": base, "merges": merges},
    }
