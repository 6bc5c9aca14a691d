"""SentencePiece-style tokenizers <-> llama.cpp's SPM vocabulary (tokenizer.ggml.model = "llama").

HF describes them as BPE with byte fallback over text whose spaces became "▁" (Llama 2, Mistral v0.1-v0.3,
Gemma, Phi-3). llama.cpp's SPM tokenizer starts from characters and repeatedly merges the adjacent pair whose
concatenation is the vocabulary entry of highest score; HF's BPE merges the pair of lowest merge rank. Giving
each token the score -rank of the first merge that creates it makes the two pick the same merges, so the
scores are derived from tokenizer.json's merges; going back, merges are derived from the scores as HF's own
SentencePiece converter does. Characters no token covers become <0xXX> byte tokens in both.
"""
from __future__ import annotations

import re
from typing import Any

from ..errors import TokenizerError

SPACE = "\u2581"   # "▁"
_BYTE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
NO_MERGE_SCORE = -1e9          # multi-character tokens no merge creates: merged last (HF never makes them)


def is_spm(tok: dict[str, Any]) -> bool:
    model = tok.get("model") or {}
    return model.get("type") == "BPE" and bool(model.get("byte_fallback"))


def _steps(cfg: Any) -> list[dict[str, Any]]:
    if cfg is None:
        return []
    if not isinstance(cfg, dict):
        raise TokenizerError(f"unexpected tokenizer step {str(cfg)[:80]}")
    if cfg.get("type") == "Sequence":
        return [s for p in cfg.get("normalizers", cfg.get("pretokenizers")) or [] for s in _steps(p)]
    return [cfg]


def add_space_prefix(tok: dict[str, Any], where: str) -> bool:
    """Whether the pipeline puts "▁" before the text (llama.cpp's add_space_prefix); refuses pipelines that do
    more than llama.cpp's SPM tokenizer does (spaces -> "▁", an optional leading "▁")."""
    prefix = False
    for step in _steps(tok.get("normalizer")):
        kind = step.get("type")
        if kind == "Prepend" and step.get("prepend") == SPACE:
            prefix = True
        elif kind == "Replace" and step.get("pattern", {}).get("String") == " " and step.get("content") == SPACE:
            continue
        else:
            raise TokenizerError(f"{where}: normalizer step {kind!r} has no llama.cpp SPM equivalent")
    for step in _steps(tok.get("pre_tokenizer")):
        kind = step.get("type")
        if kind == "Metaspace" and step.get("replacement", SPACE) == SPACE:
            scheme = step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never")
            prefix = prefix or scheme in ("always", "first")
        elif kind == "Split" and step.get("pattern", {}).get("String") == " ":
            continue      # Gemma: split at spaces (merges never cross "▁" boundaries anyway)
        else:
            raise TokenizerError(f"{where}: pre-tokenizer step {kind!r} has no llama.cpp SPM equivalent")
    return prefix


def merge_scores(vocab: dict[str, int], merges: list[Any]) -> dict[str, float]:
    """Token -> score: -rank of the first merge that creates it; characters 0; the rest NO_MERGE_SCORE."""
    scores: dict[str, float] = {}
    for rank, m in enumerate(merges):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        scores.setdefault(left + right, -float(rank))
    return {t: scores.get(t, 0.0 if len(t) == 1 else NO_MERGE_SCORE) for t in vocab}


def merges_from_scores(tokens: list[str], scores: list[float], mergeable: set[int]) -> list[list[str]]:
    """HF's SentencePiece extraction: every split of a token into two vocabulary pieces is a merge, ranked
    by the token's score (highest first), then by the pieces' ids."""
    ids = {t: i for i, t in enumerate(tokens) if i in mergeable}
    found: list[tuple[float, int, int, str, str]] = []
    for piece, idx in ids.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                found.append((-scores[idx], ids[left], ids[right], left, right))
    found.sort()
    return [[left, right] for _, _, _, left, right in found]


def is_byte_token(text: str) -> bool:
    return bool(_BYTE.fullmatch(text))


def spm_tokenizer_json(tokens: list[str], types: list[int], scores: list[float], space_prefix: bool,
                       unk: int | None, added: list[dict[str, Any]], post: dict[str, Any] | None,
                       normal_types: tuple[int, ...]) -> dict[str, Any]:
    """An HF tokenizer.json for an SPM vocabulary (BPE with byte fallback, "▁" for spaces)."""
    mergeable = {i for i, k in enumerate(types) if k in normal_types}
    base = {t: i for i, t in enumerate(tokens) if i in mergeable or is_byte_token(t) or i == unk}
    for a in added:
        base.setdefault(a["content"], a["id"])
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    normalizer = ({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE}, replace]}
                  if space_prefix else replace)
    decoder_steps: list[dict[str, Any]] = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                                           {"type": "ByteFallback"}, {"type": "Fuse"}]
    if space_prefix:
        decoder_steps.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": normalizer,
        "pre_tokenizer": None, "post_processor": post, "decoder": {"type": "Sequence", "decoders": decoder_steps},
        "model": {"type": "BPE", "dropout": None, "unk_token": tokens[unk] if unk is not None else None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": False, "vocab": base,
                  "merges": merges_from_scores(tokens, scores, mergeable)},
    }
