"""onnxruntime-genai interop: genai_config.json and the tokenizer files beside model.onnx.

With these the artifact folder runs unchanged in onnxruntime-genai (`og.Model(folder)`), and our own
runtime reads the same files for its tokenizer and special tokens.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import TokenizerError
from .hf import HFModel
from .limits import MAX_TOKENIZER_BYTES, check_tokenizer_json, load_json

GENAI_CONFIG = "genai_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def genai_config(model: HFModel, *, filename: str, context_length: int, share_buffer: bool) -> dict[str, Any]:
    c = model.config
    eos = list(c.eos_token_ids) or ([c.bos_token_id] if c.bos_token_id is not None else [0])
    gen = model.generation_config
    return {
        "model": {
            "bos_token_id": c.bos_token_id if c.bos_token_id is not None else eos[0],
            "context_length": context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename,
                "head_size": c.head_dim,
                "hidden_size": c.hidden_size,
                "inputs": {
                    "input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": c.num_heads,
                "num_hidden_layers": c.num_layers,
                "num_key_value_heads": c.num_kv_heads,
            },
            "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": int(c.raw.get("pad_token_id") or eos[0]),
            "type": c.model_type or "llama",
            "vocab_size": c.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": bool(gen.get("do_sample", False)), "early_stopping": True,
            "length_penalty": 1.0, "max_length": context_length, "min_length": 0, "no_repeat_ngram_size": 0,
            "num_beams": 1, "num_return_sequences": 1, "past_present_share_buffer": share_buffer,
            "repetition_penalty": float(gen.get("repetition_penalty", 1.0)),
            "temperature": float(gen.get("temperature", 1.0)), "top_k": int(gen.get("top_k", 1) or 1),
            "top_p": float(gen.get("top_p", 1.0)),
        },
    }


def write_genai_files(model: HFModel, folder: Path, *, filename: str, context_length: int,
                      share_buffer: bool) -> list[str]:
    """Write genai_config.json and copy the tokenizer files into `folder`; returns the names written."""
    cfg = genai_config(model, filename=filename, context_length=context_length, share_buffer=share_buffer)
    (folder / GENAI_CONFIG).write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    written = [GENAI_CONFIG]
    for name in TOKENIZER_FILES:
        src = model.path / name
        if not src.is_file():
            continue
        if name == "tokenizer_config.json":
            data = json.loads(src.read_text(encoding="utf-8"))
            # onnxruntime-extensions picks its tokenizer by class; byte-level BPE folders may omit it
            data.setdefault("tokenizer_class", "GPT2Tokenizer")
            chat = model.chat_template
            if chat and "chat_template" not in data:
                data["chat_template"] = chat
            (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        else:
            if name == "tokenizer.json":   # the same checks as the GGUF path: ids bounded by the embedding rows
                check_tokenizer_json(load_json(src, max_bytes=MAX_TOKENIZER_BYTES, error=TokenizerError),
                                     model.config.vocab_size, str(src))
            shutil.copyfile(src, folder / name)
        written.append(name)
    return written
