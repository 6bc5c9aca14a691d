"""A SentencePiece `tokenizer.model` (the ModelProto protobuf) read without the sentencepiece package, into GGUF
vocabulary data: Unigram models become llama.cpp's UGM vocabulary ("t5"), BPE models its SPM vocabulary
("llama"); pieces, scores and piece types are llama.cpp's own (its token types are SentencePiece's), the
normalizer spec gives the space prefix, whitespace removal and the precompiled charsmap.

Only the fields used are decoded (ModelProto: pieces = 1, trainer_spec = 2, normalizer_spec = 3; SentencePiece:
piece = 1, score = 2, type = 3; TrainerSpec: model_type = 3, byte_fallback = 35, unk/bos/eos/pad ids = 40-43;
NormalizerSpec: precompiled_charsmap = 2, add_dummy_prefix = 3, remove_extra_whitespaces = 4); a damaged or
hostile file is a TokenizerError, never an IndexError.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Iterator

from ..errors import TokenizerError
from .limits import MAX_TOKENIZER_BYTES

_UNIGRAM, _BPE = 1, 2
_NORMAL, _UNUSED = 1, 5


def _fields(buf: bytes, where: str) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message: ints for varints and fixed32 (as bytes for 32-bit),
    bytes for length-delimited fields."""
    i, n = 0, len(buf)

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            if i >= n or shift > 63:
                raise TokenizerError(f"{where}: truncated or malformed protobuf varint")
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while i < n:
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, wire, varint()
        elif wire == 1:
            if i + 8 > n:
                raise TokenizerError(f"{where}: truncated protobuf field {field}")
            yield field, wire, buf[i:i + 8]
            i += 8
        elif wire == 2:
            size = varint()
            if i + size > n:
                raise TokenizerError(f"{where}: protobuf field {field} runs past the end of the file")
            yield field, wire, buf[i:i + size]
            i += size
        elif wire == 5:
            if i + 4 > n:
                raise TokenizerError(f"{where}: truncated protobuf field {field}")
            yield field, wire, buf[i:i + 4]
            i += 4
        else:
            raise TokenizerError(f"{where}: protobuf wire type {wire} is not valid here (not a tokenizer.model?)")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def read_sentencepiece(path: Path, vocab_size: int, tokenizer_config: dict[str, Any]) -> Any:
    """tokenizer.model -> GGUFVocab (see tokenizer.GGUFVocab), padded to `vocab_size` embedding rows."""
    from .tokenizer import TOKEN_CONTROL, TOKEN_USER_DEFINED, GGUFVocab

    where = str(path)
    if path.stat().st_size > MAX_TOKENIZER_BYTES:
        raise TokenizerError(f"{where} is larger than {MAX_TOKENIZER_BYTES} bytes")
    pieces: list[tuple[str, float, int]] = []
    trainer: dict[int, Any] = {}
    normalizer: dict[int, Any] = {}
    for field, wire, value in _fields(path.read_bytes(), where):
        if field == 1 and wire == 2:
            piece, score, kind = None, 0.0, _NORMAL
            for f, w, v in _fields(value, where):
                if f == 1 and w == 2:
                    try:
                        piece = v.decode("utf-8")
                    except UnicodeDecodeError:
                        raise TokenizerError(f"{where}: piece {len(pieces)} is not UTF-8") from None
                elif f == 2 and w == 5:
                    (score,) = struct.unpack("<f", v)
                elif f == 3 and w == 0:
                    kind = v
            if piece is None or kind not in (1, 2, 3, 4, 5, 6):
                raise TokenizerError(f"{where}: piece {len(pieces)} has no text or an unknown type {kind}")
            pieces.append((piece, float(score), int(kind)))
        elif field in (2, 3) and wire == 2:
            (trainer if field == 2 else normalizer).update({f: v for f, _, v in _fields(value, where)})
    if not pieces:
        raise TokenizerError(f"{where} holds no pieces (not a SentencePiece model?)")
    if len(pieces) > vocab_size:
        raise TokenizerError(f"{where}: {len(pieces)} pieces for a model of {vocab_size} embedding rows")
    model_type = trainer.get(3, _UNIGRAM)
    if model_type not in (_UNIGRAM, _BPE):
        raise TokenizerError(f"{where}: SentencePiece model type {model_type} (word/char) has no llama.cpp equivalent")
    if model_type == _UNIGRAM and trainer.get(35):
        raise TokenizerError(f"{where}: a Unigram model with byte fallback has no llama.cpp UGM equivalent")
    tokens = [p for p, _, _ in pieces] + [f"[PAD{i}]" for i in range(len(pieces), vocab_size)]
    scores = [s for _, s, _ in pieces] + [0.0] * (vocab_size - len(pieces))
    types = [k for _, _, k in pieces] + [_UNUSED] * (vocab_size - len(pieces))
    added = tokenizer_config.get("added_tokens_decoder")     # {"32000": {"content": "<|user|>", "special": true}}
    for key, entry in (added.items() if isinstance(added, dict) else ()):
        if not (str(key).isdigit() and isinstance(entry, dict) and isinstance(entry.get("content"), str)):
            raise TokenizerError(f"{where}: tokenizer_config.json added_tokens_decoder entry {str(key)[:20]!r} "
                                 "must map an id to {\"content\": string}")
        idx = int(key)
        if idx >= vocab_size:
            raise TokenizerError(f"{where}: added token id {idx} is outside the {vocab_size} embedding rows")
        if idx >= len(pieces) or tokens[idx] == entry["content"]:
            tokens[idx], scores[idx] = entry["content"], 0.0
            types[idx] = TOKEN_CONTROL if entry.get("special") else TOKEN_USER_DEFINED
    special_ids: dict[str, int] = {}
    for role, field, default in (("unk", 40, 0), ("bos", 41, 1), ("eos", 42, 2), ("pad", 43, -1)):
        idx = _signed(trainer.get(field, default))
        if 0 <= idx < len(pieces):
            special_ids[role] = idx
    by_text = {t: i for i, t in enumerate(tokens) if types[i] != _UNUSED}
    for role in ("bos", "eos", "unk", "pad"):          # tokenizer_config.json names win, as in the json route
        value = tokenizer_config.get(f"{role}_token")
        content = value.get("content") if isinstance(value, dict) else value
        if isinstance(content, str) and content in by_text:
            special_ids[role] = by_text[content]
    for idx in special_ids.values():
        if types[idx] == _NORMAL:
            types[idx] = TOKEN_CONTROL
    charsmap = normalizer.get(2) or None
    if charsmap is not None and len(charsmap) < 8:
        raise TokenizerError(f"{where}: the normalizer's precompiled charsmap is damaged")
    ugm = model_type == _UNIGRAM
    return GGUFVocab("t5" if ugm else "llama", "default", tokens, types, [], special_ids,
                     add_bos=bool(tokenizer_config.get("add_bos_token", not ugm)),
                     add_eos=bool(tokenizer_config.get("add_eos_token", ugm)), scores=scores,
                     add_space_prefix=bool(normalizer.get(3, 1)),
                     remove_extra_whitespaces=bool(normalizer.get(4, 1)) if ugm else None,
                     precompiled_charsmap=charsmap if ugm else None)
