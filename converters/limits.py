"""Limits every reader applies before it trusts a value from a file: bounded JSON loading (size, nesting depth,
strict UTF-8, no NaN/Infinity), integer ranges, and shape products with overflow checks.

One place, so a config.json, a tokenizer.json, a safetensors header and a manifest are held to the same rules and
every failure is a typed `EdgeLLMError` naming the file and the key.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError, EdgeLLMError, ModelFormatError

MiB = 1 << 20
MAX_CONFIG_BYTES = 16 * MiB          # config.json, generation_config.json, tokenizer_config.json, manifests
MAX_TOKENIZER_BYTES = 512 * MiB      # tokenizer.json (a 262k-token SentencePiece vocabulary is ~35 MB)
MAX_JSON_DEPTH = 64                  # real configs nest 4-6 levels; tokenizer.json about 8
INT64_LIMIT = 1 << 63                # element counts and byte sizes must stay below it (llama.cpp: INT64_MAX)

# Sane upper bounds for model hyperparameters, checked before any loop or allocation depends on them.
# The largest public models sit far below each (hidden 16k-25k, 126 layers, 128-256 heads, vocab 262k).
MODEL_LIMITS: dict[str, int] = {
    "hidden_size": 1 << 17,
    "intermediate_size": 1 << 20,
    "num_hidden_layers": 512,         # llama.cpp's LLAMA_MAX_LAYERS
    "num_attention_heads": 4096,
    "num_key_value_heads": 4096,
    "head_dim": 1 << 14,
    "vocab_size": 1 << 22,
    "max_position_embeddings": 1 << 26,
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unicode_ok(text: str) -> bool:
    """False for a string holding a lone surrogate (JSON's "\\udc80" decodes to one; it is not valid Unicode and
    cannot be written as UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_depth(value: Any, limit: int, bad_strings: list[str] | None = None) -> int:
    """Nesting depth of a decoded JSON value, walked iteratively; stops counting past `limit`. Strings (keys and
    values) that are not valid Unicode are appended to `bad_strings` when given."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            if isinstance(item, dict):
                if bad_strings is not None:
                    bad_strings.extend(k for k in item if not _unicode_ok(k))
                children: Any = item.values()
            else:
                children = item
            for c in children:
                if isinstance(c, (dict, list)):
                    stack.append((c, depth + 1))
                elif bad_strings is not None and isinstance(c, str) and not _unicode_ok(c):
                    bad_strings.append(c)
        elif bad_strings is not None and isinstance(item, str) and not _unicode_ok(item):
            bad_strings.append(item)
    return deepest


def load_json(path: Path, *, max_bytes: int = MAX_CONFIG_BYTES, max_depth: int = MAX_JSON_DEPTH,
              error: type[EdgeLLMError] = ConfigError, want_object: bool = True) -> Any:
    """Read a JSON file with bounds: its size before reading, strict UTF-8, no NaN/Infinity, nesting depth.

    Every failure is `error` (a typed EdgeLLMError) naming the file; nothing from the file is trusted before."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path} is {size} bytes; more than the {max_bytes} this kind of file may hold",
                        "the file is corrupt or not what its name says")
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror or exc})") from None
    return loads_json(raw, str(path), max_depth=max_depth, error=error, want_object=want_object)


def loads_json(raw: bytes | str, where: str, *, max_depth: int = MAX_JSON_DEPTH,
               error: type[EdgeLLMError] = ConfigError, want_object: bool = True) -> Any:
    """`load_json` for bytes already in memory (a safetensors header, a GGUF string)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise error(f"{where} nests JSON deeper than {max_depth} levels") from None
    except ValueError as exc:   # JSONDecodeError, NaN/Infinity, integers with more digits than Python parses
        raise error(f"{where} is not valid JSON ({str(exc)[:200]})") from None
    bad: list[str] = []
    if json_depth(data, max_depth, bad) > max_depth:
        raise error(f"{where} nests JSON deeper than {max_depth} levels")
    if bad:
        raise error(f"{where} holds a string with a lone surrogate ({bad[0][:40].encode('utf-8', 'replace')!r}); "
                    "it is not valid Unicode")
    if want_object and not isinstance(data, dict):
        raise error(f"{where} must hold a JSON object, not {type(data).__name__}")
    return data


def as_int(value: Any, name: str, where: str, *, lo: int = 0, hi: int = INT64_LIMIT - 1,
           error: type[EdgeLLMError] = ConfigError, strict: bool = False) -> int:
    """`value` as an int in [lo, hi]: ints, or (unless `strict`) floats that are whole and finite (1e3 in a
    config); never bools, strings or NaN. The error names the key and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (strict and isinstance(value, float)):
        raise error(f"{where}: {name} must be an integer, got {type(value).__name__} {str(value)[:40]!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise error(f"{where}: {name} must be a whole number, got {value!r}")
        value = int(value)
    if not lo <= value <= hi:
        raise error(f"{where}: {name}={value} is outside the range [{lo}, {hi}] edgellm accepts")
    return value


def as_float(value: Any, name: str, where: str, *, lo: float = -math.inf, hi: float = math.inf,
             error: type[EdgeLLMError] = ConfigError) -> float:
    """`value` as a finite float in [lo, hi] (ints accepted; bools, strings, NaN and inf refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{where}: {name} must be a number, got {type(value).__name__} {str(value)[:40]!r}")
    try:
        out = float(value)
    except OverflowError:
        raise error(f"{where}: {name}={str(value)[:40]} is too large") from None
    if not math.isfinite(out) or not lo <= out <= hi:
        raise error(f"{where}: {name}={out!r} must be finite and within [{lo}, {hi}]")
    return out


def shape_elements(shape: Iterable[Any], where: str, *, min_dim: int = 0, max_elements: int = INT64_LIMIT - 1,
                   error: type[EdgeLLMError] = ModelFormatError) -> int:
    """Product of a shape's dimensions (each an int >= min_dim), refused once it passes `max_elements`."""
    n = 1
    for i, d in enumerate(shape):
        d = as_int(d, f"dimension {i}", where, lo=min_dim, hi=INT64_LIMIT - 1, error=error)
        n *= d
        if n > max_elements:
            raise error(f"{where}: the shape's element count passes {max_elements} (overflow or a corrupt header)")
    return n


def _pick(cfg: dict[str, Any], *names: str) -> tuple[str, Any] | None:
    for n in names:
        if cfg.get(n) is not None:
            return n, cfg[n]
    return None


_ROPE_NUMBERS = ("factor", "low_freq_factor", "high_freq_factor", "attention_factor", "beta_fast", "beta_slow",
                 "mscale", "mscale_all_dim", "rope_theta", "partial_rotary_factor")


def _check_rope(rope: dict[str, Any], where: str) -> None:
    """RoPE scaling settings: positive finite numbers, an int original context, finite factor lists, the
    factor a scaled kind needs, and llama3's high_freq_factor above its low_freq_factor (it divides by the gap)."""
    kind = rope.get("rope_type", rope.get("type"))
    for key in _ROPE_NUMBERS:
        if rope.get(key) is not None:
            positive = key in ("factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow")
            as_float(rope[key], key, where, lo=1.0 if key == "rope_theta" else 1e-6 if positive else 0.0, hi=1e12)
    if rope.get("original_max_position_embeddings") is not None:
        as_int(rope["original_max_position_embeddings"], "original_max_position_embeddings", where, lo=1,
               hi=MODEL_LIMITS["max_position_embeddings"])
    for key in ("short_factor", "long_factor"):
        value = rope.get(key)
        if value is not None:
            if not isinstance(value, list) or len(value) > 1 << 16:
                raise ConfigError(f"{where}: {key} must be a list of numbers")
            for v in value:
                as_float(v, key, where, lo=0.0, hi=1e12)
    if kind in ("linear", "dynamic", "yarn", "llama3") and rope.get("factor") is None:
        raise ConfigError(f"{where}: rope_type {kind!r} needs a 'factor'")
    if kind == "llama3":
        lo, hi = rope.get("low_freq_factor"), rope.get("high_freq_factor")
        if lo is None or hi is None or not hi > lo or rope.get("original_max_position_embeddings") is None:
            raise ConfigError(f"{where}: llama3 RoPE needs original_max_position_embeddings and "
                              "high_freq_factor > low_freq_factor")


def check_config_values(raw: dict[str, Any], source: str) -> None:
    """Range-check a config.json's hyperparameters (and its text_config) before anything loops over them:
    integer types, bounds, head divisibility, finite floats, dict-or-null rope settings."""
    cfgs = [raw] + ([raw["text_config"]] if isinstance(raw.get("text_config"), dict) else [])
    for cfg in cfgs:
        where = source if cfg is raw else f"{source} (text_config)"
        aliases = {"hidden_size": ("hidden_size", "n_embd", "d_model"),
                   "intermediate_size": ("intermediate_size", "n_inner"),
                   "num_hidden_layers": ("num_hidden_layers", "n_layer"),
                   "num_attention_heads": ("num_attention_heads", "n_head"),
                   "num_key_value_heads": ("num_key_value_heads",), "head_dim": ("head_dim",),
                   "vocab_size": ("vocab_size",), "max_position_embeddings": ("max_position_embeddings",)}
        got: dict[str, int] = {}
        for key, names in aliases.items():
            found = _pick(cfg, *names)
            if found is not None:
                lo = 0 if key in ("head_dim", "num_key_value_heads") else 1
                got[key] = as_int(found[1], found[0], where, lo=lo, hi=MODEL_LIMITS[key])
        heads, kv = got.get("num_attention_heads"), got.get("num_key_value_heads")
        if heads and kv and heads % kv:
            raise ConfigError(f"{where}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}")
        hidden = got.get("hidden_size")
        if heads and hidden and not got.get("head_dim") and hidden % heads:
            raise ConfigError(f"{where}: hidden_size={hidden} is not divisible by num_attention_heads={heads} "
                              "and no head_dim is given")
        ranges: tuple[tuple[str, float, float], ...] = (
            ("rms_norm_eps", 0.0, 1.0), ("layer_norm_eps", 0.0, 1.0), ("rope_theta", 1.0, 1e12),
            ("partial_rotary_factor", 1e-6, 1.0))
        for key, flo, fhi in ranges:
            if cfg.get(key) is not None:
                as_float(cfg[key], key, where, lo=flo, hi=fhi)
        for key in ("rms_norm_eps", "layer_norm_eps", "max_position_embeddings"):
            if key in cfg and cfg[key] is None:   # readers default a missing key, not an explicit null
                raise ConfigError(f"{where}: {key} is null; give a number or leave the key out")
        for key in ("tie_word_embeddings", "attention_bias", "mlp_bias"):
            if cfg.get(key) is not None and not isinstance(cfg[key], bool):
                raise ConfigError(f"{where}: {key} must be true or false, not {str(cfg[key])[:40]!r}")
        for key in ("rope_scaling", "rope_parameters"):
            if cfg.get(key) is not None and not isinstance(cfg[key], dict):
                raise ConfigError(f"{where}: {key} must be an object or null, got {type(cfg[key]).__name__}")
            if isinstance(cfg.get(key), dict):
                _check_rope(cfg[key], f"{where}: {key}")
        labels = [cfg.get("_name_or_path"), cfg.get("model_type"), cfg.get("torch_dtype")]
        labels += cfg["architectures"] if isinstance(cfg.get("architectures"), list) else [cfg.get("architectures")]
        for value in labels:   # these become file names and dictionary keys
            if value is not None and (not isinstance(value, str) or len(value) > 256
                                      or any(ord(ch) < 32 or ch == "\x7f" for ch in value)):
                raise ConfigError(f"{where}: {str(value)[:60]!r} must be a name of at most 256 printable characters")
        top = max(got.get("vocab_size", MODEL_LIMITS["vocab_size"]) - 1, 0)   # ids index the embedding rows
        for key in ("bos_token_id", "eos_token_id"):
            value = cfg.get(key)
            for v in (value if isinstance(value, list) else [] if value is None else [value]):
                as_int(v, key, where, lo=0, hi=top)




def read_text(path: Path, *, max_bytes: int = MAX_CONFIG_BYTES, error: type[EdgeLLMError] = ConfigError) -> str:
    """A small text file (a chat template), size-checked before reading and decoded as strict UTF-8."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path} is {size} bytes; more than the {max_bytes} this kind of file may hold")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror or exc})") from None


def check_tokenizer_json(tok: Any, vocab_size: int, where: str) -> None:
    """Validate a tokenizer.json's model before anything is built from it: vocab ids and added-token ids are ints
    in [0, vocab_size) (the model's embedding rows), texts are strings, merges are strings or pairs."""
    from ..errors import TokenizerError

    if not isinstance(tok, dict) or not isinstance(tok.get("model"), dict):
        raise TokenizerError(f"{where} has no 'model' object")
    model = tok["model"]
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError(f"{where}: model.vocab must be a non-empty object of token -> id")
    if len(vocab) > vocab_size + 4096 or len(vocab) > MODEL_LIMITS["vocab_size"]:
        raise TokenizerError(f"{where}: {len(vocab)} vocabulary entries for a model of {vocab_size} embedding rows")
    for text, idx in vocab.items():
        as_int(idx, f"model.vocab[{text[:40]!r}]", where, lo=0, hi=vocab_size - 1, error=TokenizerError, strict=True)
    added = tok.get("added_tokens") or []
    if not isinstance(added, list):
        raise TokenizerError(f"{where}: added_tokens must be a list")
    for i, a in enumerate(added):
        if not isinstance(a, dict) or not isinstance(a.get("content"), str):
            raise TokenizerError(f"{where}: added_tokens[{i}] must be an object with a string 'content'")
        as_int(a.get("id"), f"added_tokens[{i}].id", where, lo=0, hi=vocab_size - 1, error=TokenizerError,
               strict=True)
    merges = model.get("merges", [])
    if not isinstance(merges, list):
        raise TokenizerError(f"{where}: model.merges must be a list")
    for i, m in enumerate(merges):
        if not (isinstance(m, str) or (isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m))):
            raise TokenizerError(f"{where}: model.merges[{i}] must be 'a b' or ['a', 'b'], got {str(m)[:60]}")


def check_tokenizer_config(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """tokenizer_config.json's keys edgellm uses, type-checked: special tokens (string, {"content": string} or
    null), add_*_token flags (bool or null), chat_template (string, null or a list of {name, template})."""
    from ..errors import TokenizerError

    for key, value in doc.items():
        if key.endswith("_token") and not key.startswith("add_") and value is not None \
                and not isinstance(value, str) and \
                not (isinstance(value, dict) and isinstance(value.get("content"), str)):
            raise TokenizerError(f"{where}: {key} must be a string or {{\"content\": string}}, got {str(value)[:60]}")
        if key.startswith("add_") and key.endswith("_token") and value is not None and not isinstance(value, bool):
            raise TokenizerError(f"{where}: {key} must be true or false, got {str(value)[:60]}")
    tpl = doc.get("chat_template")
    if tpl is not None and not isinstance(tpl, str) and not (
            isinstance(tpl, list) and all(isinstance(t, dict) and isinstance(t.get("template"), str) for t in tpl)):
        raise TokenizerError(f"{where}: chat_template must be a string or a list of {{name, template}}")
    return doc



_GEN_NUMBERS = {"temperature": (0.0, 1e4), "top_p": (0.0, 1.0), "min_p": (0.0, 1.0), "repetition_penalty": (0.0, 1e4),
                "length_penalty": (-1e4, 1e4)}
_GEN_INTS = {"top_k": (0, MODEL_LIMITS["vocab_size"]), "max_length": (0, 1 << 30), "max_new_tokens": (0, 1 << 30),
             "min_length": (0, 1 << 30), "num_beams": (1, 1024)}


def check_generation_config(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """generation_config.json's values edgellm copies into artifacts: token ids (int or list of ints in range),
    sampling numbers finite and in range, flags bool (ConfigError otherwise)."""
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = doc.get(key)
        for v in value if isinstance(value, list) else [] if value is None else [value]:
            as_int(v, key, where, lo=0, hi=MODEL_LIMITS["vocab_size"], strict=True)
    for key, (lo, hi) in _GEN_NUMBERS.items():
        if doc.get(key) is not None:
            as_float(doc[key], key, where, lo=lo, hi=hi)
    for key, (lo, hi) in _GEN_INTS.items():
        if doc.get(key) is not None:
            as_int(doc[key], key, where, lo=lo, hi=hi, strict=True)
    if doc.get("do_sample") is not None and not isinstance(doc["do_sample"], bool):
        raise ConfigError(f"{where}: do_sample must be true or false")
    return doc

__all__ = ["MAX_CONFIG_BYTES", "MAX_TOKENIZER_BYTES", "MAX_JSON_DEPTH", "MODEL_LIMITS", "INT64_LIMIT", "load_json",
           "loads_json", "as_int", "as_float", "shape_elements", "check_config_values", "json_depth", "read_text",
           "check_tokenizer_json", "check_tokenizer_config", "check_generation_config"]
