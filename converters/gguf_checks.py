"""`validate_gguf`: everything `open_gguf` checks (the file's structure) plus the metadata llama.cpp's model
loader trusts or asserts on (layer and expert counts, head counts it divides by, tokenizer arrays it indexes by
the vocabulary size, special token ids it pushes into prompts). A file this accepts is safe to hand to llama.cpp;
one it refuses is a `ModelFormatError` naming the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelFormatError
from .gguf_reading import GGUFFile, open_gguf

_INT_TYPES = {0, 1, 2, 3, 4, 5, 10, 11}       # u8 i8 u16 i16 u32 i32 u64 i64
_F32, _I32, _STRING = 6, 5, 8
MAX_LAYERS = 512                               # LLAMA_MAX_LAYERS
MAX_EXPERTS = 1024                             # LLAMA_MAX_EXPERTS
_SPECIAL_IDS = ("bos", "eos", "eot", "eom", "unknown", "seperator", "separator", "padding", "mask", "cls",
                "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep")


class _Checker:
    def __init__(self, f: GGUFFile) -> None:
        self.f = f

    def bad(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.f.path}: {what}",
                                "the file is corrupt or was written by a broken exporter; re-export it")

    def integer(self, key: str, lo: int, hi: int, required: bool = False, per_layer: int | None = None) -> Any:
        """The key's integer value (or list of values, when `per_layer` allows an array) within [lo, hi]."""
        if key not in self.f.types:
            if required:
                raise self.bad(f"metadata key {key} is missing")
            return None
        vtype, etype = self.f.types[key]
        value = self.f.fields[key]
        if vtype == 9 and per_layer is not None and etype in _INT_TYPES:
            if len(value) != per_layer:
                raise self.bad(f"{key} lists {len(value)} values for {per_layer} layers")
            values = value
        elif vtype in _INT_TYPES:
            values = [value]
        else:
            raise self.bad(f"{key} must be an integer (GGUF type {vtype}{'/' + str(etype) if etype else ''})")
        for v in values:
            if not lo <= int(v) <= hi:
                raise self.bad(f"{key}={v} is outside [{lo}, {hi}]")
        return value

    def array(self, key: str, etypes: tuple[int, ...], min_len: int) -> None:
        if key not in self.f.types:
            return
        vtype, etype = self.f.types[key]
        if vtype != 9 or etype not in etypes:
            raise self.bad(f"{key} must be an array of GGUF type {etypes[0]} (found type {vtype}/{etype})")
        n = self.f.fields.length(key)
        if n < min_len:
            raise self.bad(f"{key} has {n} entries for a vocabulary of {min_len} tokens")

    def run(self) -> None:
        f = self.f
        if f.types.get("general.architecture") != (_STRING, None) or not f.fields["general.architecture"]:
            raise self.bad("general.architecture is missing or not a string")
        arch = f.fields["general.architecture"]
        n_layer = self.integer(f"{arch}.block_count", 1, MAX_LAYERS, required=True)
        self.integer(f"{arch}.context_length", 1, 1 << 31, required=True)
        n_embd = self.integer(f"{arch}.embedding_length", 1, 1 << 20, required=True)
        self.integer(f"{arch}.feed_forward_length", 0, 1 << 24, per_layer=n_layer)
        self.integer(f"{arch}.nextn_predict_layers", 0, n_layer)
        heads = self.integer(f"{arch}.attention.head_count", 0, 1 << 16, per_layer=n_layer)
        kv = self.integer(f"{arch}.attention.head_count_kv", 0, 1 << 16, per_layer=n_layer)
        key_len = self.integer(f"{arch}.attention.key_length", 1, 1 << 16)
        if heads is None or heads == 0 or kv == 0:
            raise self.bad(f"{arch}.attention.head_count / head_count_kv must be present and at least 1")
        for layer in range(n_layer if isinstance(heads, list) or isinstance(kv, list) else 1):
            h = heads[layer] if isinstance(heads, list) else heads
            k = kv[layer] if isinstance(kv, list) else kv
            if h and k and h % k:
                raise self.bad(f"layer {layer}: head_count={h} is not a multiple of head_count_kv={k}")
            if h and key_len is None and n_embd % h:
                raise self.bad(f"embedding_length={n_embd} is not divisible by head_count={h}")
        experts = self.integer(f"{arch}.expert_count", 0, MAX_EXPERTS) or 0
        used = self.integer(f"{arch}.expert_used_count", 0 if not experts else 1, experts, per_layer=n_layer)
        if experts and used is None:
            raise self.bad(f"{arch}.expert_count={experts} but {arch}.expert_used_count is missing")
        self.integer(f"{arch}.expert_group_count", 0, max(experts - 1, 0))
        self.integer(f"{arch}.vocab_size", 1, 1 << 24)
        self.tokenizer()
        self.tensors()

    def tensors(self) -> None:
        """Metadata and tensors agree where every decoder llama.cpp loads needs it: an embedding whose rows are
        the vocabulary (llama.cpp sizes its logits and token lookups by it)."""
        by_name = {t.name: t for t in self.f.tensors}
        if not by_name:
            raise self.bad("the file holds no tensors")
        embd = by_name.get("token_embd.weight")
        if embd is None:
            raise self.bad("the file has no token_embd.weight tensor")
        n = self.f.fields.length("tokenizer.ggml.tokens") if "tokenizer.ggml.tokens" in self.f.types else None
        if n is not None and (len(embd.shape) != 2 or embd.shape[1] != n):
            raise self.bad(f"token_embd.weight has shape {list(embd.shape)} for a vocabulary of {n} tokens")

    def tokenizer(self) -> None:
        f = self.f
        if "tokenizer.ggml.tokens" not in f.types:
            return
        if f.types["tokenizer.ggml.tokens"] != (9, _STRING):
            raise self.bad("tokenizer.ggml.tokens must be an array of strings")
        n = f.fields.length("tokenizer.ggml.tokens")
        if n < 1 or n >= 1 << 31:
            raise self.bad(f"tokenizer.ggml.tokens holds {n} tokens")
        if "tokenizer.ggml.model" in f.types and f.types["tokenizer.ggml.model"] != (_STRING, None):
            raise self.bad("tokenizer.ggml.model must be a string")
        self.array("tokenizer.ggml.scores", (_F32, _I32), n)
        self.array("tokenizer.ggml.token_type", (_I32,), n)
        self.array("tokenizer.ggml.merges", (_STRING,), 0)
        for name in _SPECIAL_IDS:
            self.integer(f"tokenizer.ggml.{name}_token_id", 0, n - 1)
        for which in ("bos", "eos"):
            flag = f"tokenizer.ggml.add_{which}_token"
            if flag in f.types and f.types[flag][0] != 7:
                raise self.bad(f"{flag} must be a bool")
            if f.fields.get(flag) and f"tokenizer.ggml.{which}_token_id" not in f.types:
                raise self.bad(f"{flag} is set but tokenizer.ggml.{which}_token_id is missing")
        for key, kind in f.types.items():
            if key.startswith("tokenizer.chat_template") and kind != (_STRING, None):
                raise self.bad(f"{key} must be a string")


def check_gguf_metadata(f: GGUFFile) -> None:
    """Raise ModelFormatError when the metadata of an opened GGUF would make llama.cpp's loader fail or abort."""
    _Checker(f).run()


def validate_gguf(path: str | Path) -> dict[str, Any]:
    """Validate a GGUF file completely (structure, sizes, the metadata llama.cpp relies on) before any native
    library sees it. Raises ModelFormatError saying what is wrong and where. Returns what a loader checks next:
    {"architecture", "n_tokens", "chat_template" (str or None), "chat_templates" (every tokenizer.chat_template*
    key: llama-cpp-python compiles them all when it opens the file)}."""
    f = open_gguf(path)
    try:
        check_gguf_metadata(f)
        tokens = f.fields.length("tokenizer.ggml.tokens") if "tokenizer.ggml.tokens" in f.fields else 0
        return {"architecture": f.fields["general.architecture"], "n_tokens": tokens,
                "chat_template": f.fields.get("tokenizer.chat_template"),
                "chat_templates": {k: f.fields[k] for k in f.fields if k.startswith("tokenizer.chat_template")}}
    finally:
        f.close()


__all__ = ["validate_gguf", "check_gguf_metadata"]
