"""GGUF -> Hugging Face folder, torch-free.

Dequantizes every tensor with gguf-py, undoes llama.cpp's Q/K row permutation, writes config.json in the
classic HF schema, model.safetensors (streamed, one tensor at a time), tokenizer.json rebuilt with the
`tokenizers` library from the GGUF vocabulary and merges, tokenizer_config.json with the chat template
and special tokens, and generation_config.json. The folder is built under a temp name and renamed when
complete.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ConversionError, OutputPathError, UnsupportedArchitectureError
from .architectures import family_for_gguf
from .families.base import Family, from_gguf
from .gguf_reading import field_value, open_gguf
from .hf import parse_config
from .tokenizer import GGUFVocab, tokenizer_json_from_vocab

log = logging.getLogger(__name__)

_OUT_DTYPES = ("BF16", "F16", "F32")


def _kv_heads(value: Any) -> int:
    """head_count_kv: a number, or one per layer with 0 for recurrent layers (the attention layers' count)."""
    if isinstance(value, (list, tuple)) or hasattr(value, "__len__"):
        return max((int(v) for v in value), default=0)
    return int(value)


def _hf_config(reader: Any, arch: str, family: Family, n_vocab: int, tied: bool, vocab: GGUFVocab,
               dtype: str) -> dict[str, Any]:
    def key(k: str, default: Any = None) -> Any:
        return field_value(reader, f"{arch}.{k}", default)

    hidden, heads = int(key("embedding_length")), int(key("attention.head_count"))
    head_dim = int(key("attention.key_length", 0) or hidden // heads)   # llama.cpp: n_embd_head_k (rope dims may be fewer)
    cfg: dict[str, Any] = {
        "architectures": [family.hf_classes[0]],
        "model_type": family.model_type,
        "hidden_size": hidden,
        "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": int(key("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": _kv_heads(key("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "vocab_size": n_vocab,
        "max_position_embeddings": int(key("context_length", 2048)),
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(key("rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "bos_token_id": vocab.special_ids.get("bos"),
        "eos_token_id": vocab.special_ids.get("eos"),
        "torch_dtype": {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dtype],
        "_name_or_path": "-".join(str(p) for p in (field_value(reader, "general.basename") or
                                                   field_value(reader, "general.name") or "model",
                                                   field_value(reader, "general.size_label")) if p),
    }
    scale = key("rope.scaling.factor")
    if key("rope.scaling.type") == "linear" and scale:
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(scale)}
    cfg.update(family.hf_config(key, cfg))
    return cfg


def _vocab(reader: Any) -> GGUFVocab:
    tokens = [str(t) for t in field_value(reader, "tokenizer.ggml.tokens", [])]
    if not tokens:
        raise ConversionError("the GGUF has no tokenizer.ggml.tokens; cannot rebuild tokenizer.json")
    specials = {}
    for key in ("bos", "eos", "unknown", "padding", "seperator"):
        idx = field_value(reader, f"tokenizer.ggml.{key}_token_id")
        if idx is not None:
            specials[{"unknown": "unk", "padding": "pad", "seperator": "sep"}.get(key, key)] = int(idx)
    scores = field_value(reader, "tokenizer.ggml.scores")
    charsmap = field_value(reader, "tokenizer.ggml.precompiled_charsmap")
    return GGUFVocab(
        model=str(field_value(reader, "tokenizer.ggml.model", "")),
        pre=str(field_value(reader, "tokenizer.ggml.pre", "default")),
        tokens=tokens,
        token_types=[int(t) for t in field_value(reader, "tokenizer.ggml.token_type", [1] * len(tokens))],
        merges=[str(m) for m in field_value(reader, "tokenizer.ggml.merges", [])],
        special_ids=specials,
        add_bos=bool(field_value(reader, "tokenizer.ggml.add_bos_token", False)),
        add_eos=bool(field_value(reader, "tokenizer.ggml.add_eos_token", False)),
        scores=[float(x) for x in scores] if scores is not None else None,
        add_space_prefix=bool(field_value(reader, "tokenizer.ggml.add_space_prefix", True)),
        remove_extra_whitespaces=bool(field_value(reader, "tokenizer.ggml.remove_extra_whitespaces", False)),
        precompiled_charsmap=bytes(bytearray(int(b) & 0xFF for b in charsmap)) if charsmap is not None else None,
    )


def gguf_to_hf(gguf_path: str | Path, output: str | Path, dtype: str = "BF16", overwrite: bool = False) -> Path:
    """Rebuild an HF model folder from a GGUF file. Returns the folder path."""
    import gguf
    from tokenizers import Tokenizer

    if dtype not in _OUT_DTYPES:
        raise ConversionError(f"dtype {dtype!r} is not one of {', '.join(_OUT_DTYPES)}")
    src, out = Path(gguf_path), Path(output)
    if out.exists() and not overwrite:
        raise OutputPathError(f"{out} already exists", "pass overwrite=True (--overwrite) or pick a new folder")
    reader = open_gguf(src)
    arch = str(field_value(reader, "general.architecture", ""))
    family = family_for_gguf(arch)
    vocab = _vocab(reader)
    tensors = {t.name: t for t in reader.tensors}
    n_vocab = int(tensors["token_embd.weight"].shape[1])
    tied = "output.weight" not in tensors
    cfg = _hf_config(reader, arch, family, n_vocab, tied, vocab, dtype)
    args = family.parse(parse_config(cfg, f"{src.name} metadata"))
    by_gguf = {gg: (hf, rule) for hf, (gg, rule) in family.hf_to_gguf(args).items()}

    order: list[tuple[str, Any, Any]] = []
    for t in reader.tensors:
        if t.name not in by_gguf:
            if t.name.startswith(("rope_freqs.", "rope_factors_")):
                raise UnsupportedArchitectureError(
                    f"{src.name} carries RoPE frequency factors ({t.name}), which cannot be expressed back as an "
                    "HF rope_scaling block without the original parameters",
                    "convert from the original HF folder instead")
            raise ConversionError(f"GGUF tensor {t.name} has no HF name in the {family.name} family")
        hf, rule = by_gguf[t.name]
        order.append((hf, t, rule))

    def shape_of(t: Any) -> tuple[int, ...]:
        return tuple(int(d) for d in reversed(tuple(t.shape)))  # ggml ne order -> numpy order

    def tensors_iter() -> Iterator[tuple[str, np.ndarray]]:
        for hf, t, rule in order:
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape_of(t))
            yield hf, from_gguf(w, rule, args)

    from .safetensors_io import write_safetensors

    tmp = out.with_name(out.name + ".partial")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create {tmp}: {exc}") from None
    try:
        write_safetensors(tmp / "model.safetensors", [(hf, dtype, tuple(rule.shape(args)) if rule.gguf_shape else shape_of(t)) for hf, t, rule in order],
                          tensors_iter(), {"format": "pt", "source": src.name})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        tok = Tokenizer.from_str(json.dumps(tokenizer_json_from_vocab(vocab)))
        tok.save(str(tmp / "tokenizer.json"))
        text_of = {k: vocab.tokens[i] for k, i in vocab.special_ids.items()}
        tok_cfg: dict[str, Any] = {
            "tokenizer_class": {"llama": "LlamaTokenizer", "t5": "T5Tokenizer"}.get(vocab.model, "GPT2Tokenizer"),
            "add_bos_token": vocab.add_bos, "add_eos_token": vocab.add_eos,
            "clean_up_tokenization_spaces": False, "model_max_length": cfg["max_position_embeddings"],
            **{f"{k}_token": v for k, v in text_of.items()},
        }
        template = field_value(reader, "tokenizer.chat_template")
        if template:
            tok_cfg["chat_template"] = str(template)
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False))
        gen = {k: v for k, v in (("bos_token_id", cfg["bos_token_id"]), ("eos_token_id", cfg["eos_token_id"]))
               if v is not None}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("rebuilt %s from %s (%d tensors)", out, src, len(order))
    return out
