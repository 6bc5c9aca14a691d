"""Unigram tokenizers (tokenizer.json model.type "Unigram": T5, mT5, ALBERT-era SentencePiece) <-> llama.cpp's UGM
vocabulary (tokenizer.ggml.model = "t5").

llama.cpp's UGM tokenizer is SentencePiece's: the optimal (Viterbi) segmentation under the pieces' log-probability
scores, unknown code points scored min_score - 10 and consecutive unknowns fused, as HF's Unigram model does. Its
normalizer is SentencePiece's: the precompiled character map (the same blob HF's "Precompiled" normalizer holds),
then spaces to "▁", an optional "▁" before the text, and optionally extra whitespace removed. Two HF pipelines
give the same pieces as that normalizer, and only those are accepted:

- T5's: [Precompiled] [Replace " {2,}" -> " "] then WhitespaceSplit + Metaspace: words between whitespace, each
  with a leading "▁" (llama.cpp: remove_extra_whitespaces + add_space_prefix); the character map must turn
  tab, newline and carriage return into spaces (checked), since llama.cpp only merges spaces;
- Metaspace with prepend_scheme "never" (no prefix, every space a "▁").

A Metaspace that prepends "▁" without whitespace removal differs from llama.cpp on text that starts with a space
(HF: "▁a", SentencePiece: "▁▁a"), and byte fallback has no UGM equivalent: both are refused.
"""
from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from ..errors import TokenizerError

SPACE = "\u2581"
_WS = ("\t", "\n", "\r")


def _steps(cfg: Any, key: str) -> list[dict[str, Any]]:
    if cfg is None:
        return []
    if not isinstance(cfg, dict):
        raise TokenizerError(f"unexpected tokenizer step {str(cfg)[:80]}")
    if cfg.get("type") == "Sequence":
        return [s for p in cfg.get(key, []) for s in _steps(p, key)]
    return [cfg]


# -- SentencePiece's precompiled character map: a double-array trie (darts-clone units) + replacement strings ----
def charsmap_lookup(blob: bytes, text: bytes) -> tuple[int, bytes] | None:
    """(matched length, replacement) of the longest key that prefixes `text`, or None (llama.cpp's walk)."""
    (size,) = struct.unpack_from("<I", blob, 0)
    units = struct.unpack_from(f"<{size // 4}I", blob, 4)
    strings = blob[4 + size:]

    def offset(u: int) -> int:
        return (u >> 10) << ((u & (1 << 9)) >> 6)

    node, best = offset(units[0]), None
    for i, c in enumerate(text):
        if c == 0:
            break
        node ^= c
        if node >= len(units) or units[node] & ((1 << 31) | 0xFF) != c:
            break
        leaf = (units[node] >> 8) & 1
        node ^= offset(units[node])
        if leaf and node < len(units):
            start = units[node] & ((1 << 31) - 1)
            best = (i + 1, strings[start:strings.index(b"\0", start)])
    return best


def _charsmap(step: dict[str, Any], where: str) -> bytes:
    try:
        blob = base64.b64decode(step.get("precompiled_charsmap") or "", validate=True)
        (size,) = struct.unpack_from("<I", blob, 0)
        if size % 4 or 4 + size >= len(blob):
            raise ValueError("trie size outside the blob")
        charsmap_lookup(blob, b"a")
    except (binascii.Error, struct.error, ValueError, TypeError) as exc:
        raise TokenizerError(f"{where}: the Precompiled normalizer's charsmap is damaged ({exc})") from None
    return blob


def unigram_pipeline(tok: dict[str, Any], where: str) -> tuple[bool, bool, bytes | None]:
    """(add_space_prefix, remove_extra_whitespaces, precompiled_charsmap) of llama.cpp's UGM normalizer that
    splits text as this tokenizer.json does; TokenizerError for a pipeline it cannot reproduce."""
    charsmap, collapse = None, False
    for step in _steps(tok.get("normalizer"), "normalizers"):
        kind = step.get("type")
        if kind == "Precompiled":
            charsmap = _charsmap(step, where) if step.get("precompiled_charsmap") else None
        elif kind == "Replace" and step.get("pattern", {}).get("Regex") == " {2,}" and step.get("content") == " ":
            collapse = True
        else:
            raise TokenizerError(f"{where}: Unigram normalizer step {kind!r} has no llama.cpp UGM equivalent",
                                 "llama.cpp normalizes with the precompiled charsmap and whitespace rules only")
    split_ws, scheme = False, None
    for step in _steps(tok.get("pre_tokenizer"), "pretokenizers"):
        kind = step.get("type")
        if kind == "WhitespaceSplit":
            split_ws = True
        elif kind == "Metaspace" and step.get("replacement", SPACE) == SPACE:
            scheme = step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never")
        else:
            raise TokenizerError(f"{where}: Unigram pre-tokenizer step {kind!r} has no llama.cpp UGM equivalent")
    if scheme is None:
        raise TokenizerError(f"{where}: a Unigram tokenizer without a Metaspace pre-tokenizer has no llama.cpp "
                             "UGM equivalent (llama.cpp always writes spaces as '▁')")
    if split_ws:
        if scheme != "always":
            raise TokenizerError(f"{where}: WhitespaceSplit + Metaspace(prepend_scheme={scheme!r}): llama.cpp puts "
                                 "'▁' before every word when it removes extra whitespace", "T5 uses 'always'")
        mapped = {c: charsmap_lookup(charsmap, c.encode()) if charsmap else None for c in _WS}
        if any(m is None or m[1] != b" " for m in mapped.values()):
            raise TokenizerError(f"{where}: WhitespaceSplit splits at tabs and newlines, but the Precompiled "
                                 "charsmap does not turn them into spaces, so llama.cpp would keep them in words")
        return scheme in ("always", "first"), True, charsmap
    if scheme != "never" or collapse:
        raise TokenizerError(
            f"{where}: Metaspace(prepend_scheme={scheme!r}) without WhitespaceSplit differs from llama.cpp's "
            "SentencePiece normalizer on leading and repeated spaces", "only T5's pipeline and prepend 'never' map")
    return False, False, charsmap


def unigram_tokens(tok: dict[str, Any], where: str) -> tuple[list[str], list[float], int | None]:
    """(pieces, scores, unk id) of a Unigram model; byte fallback is refused."""
    model = tok["model"]
    if model.get("byte_fallback"):
        raise TokenizerError(f"{where}: a Unigram tokenizer with byte fallback has no llama.cpp UGM equivalent",
                             "llama.cpp's UGM tokenizer maps unknown characters to <unk>, not to bytes")
    vocab = model.get("vocab")
    if not isinstance(vocab, list) or not all(isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                                              and isinstance(v[1], (int, float)) for v in vocab):
        raise TokenizerError(f"{where}: Unigram vocab must be a list of [piece, score] pairs")
    unk = model.get("unk_id")
    if unk is not None and not (isinstance(unk, int) and 0 <= unk < len(vocab)):
        raise TokenizerError(f"{where}: Unigram unk_id {unk!r} is outside the vocabulary")
    return [v[0] for v in vocab], [float(v[1]) for v in vocab], unk


def unigram_tokenizer_json(tokens: list[str], scores: list[float], unk: int | None, added: list[dict[str, Any]],
                           post: dict[str, Any] | None, space_prefix: bool, remove_extra: bool,
                           charsmap: bytes | None, used: int | None = None) -> dict[str, Any]:
    """A tokenizer.json for a UGM vocabulary (the inverse of the above); `used` drops the padding rows after the
    last real piece (the converter pads to the embedding rows again)."""
    tokens, scores = tokens[:used], scores[:used]
    normalizers: list[dict[str, Any]] = []
    if charsmap:
        normalizers.append({"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode()})
    pre: list[dict[str, Any]] = [{"type": "WhitespaceSplit"}] if remove_extra else []
    pre.append({"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always" if space_prefix else "never",
                "split": True})
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers} if normalizers else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre}, "post_processor": post,
        "decoder": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always" if space_prefix else
                    "never", "split": True},
        "model": {"type": "Unigram", "unk_id": unk, "vocab": [[t, s] for t, s in zip(tokens, scores)],
                  "byte_fallback": False},
    }
