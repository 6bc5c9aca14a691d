"""GGUF metadata as llama.cpp expects it: architecture keys, RoPE, norms, tokenizer, general.* naming."""
from __future__ import annotations

from typing import Any

from .families.base import Args
from .hf import HFModel
from .rope import ALL_ROPE, rope_kind
from .tokenizer import GGUFVocab

# Special-token role -> GGUF key (tokenizer.ggml.<key>_token_id). "seperator" is llama.cpp's spelling.
SPECIAL_KEYS: dict[str, str] = {"bos": "bos", "eos": "eos", "unk": "unknown", "pad": "padding", "sep": "seperator",
                                "mask": "mask"}


def write_metadata(writer: Any, model: HFModel, args: Args, vocab: GGUFVocab, names: dict[str, str | None],
                   file_type: int, context_length: int | None) -> None:
    """Add the keys every family shares to a gguf.GGUFWriter (before its header is written); the family's
    own keys come from its `gguf_metadata` hook."""
    import gguf

    writer.add_type("model")
    if names.get("name"):
        writer.add_name(names["name"])
    for key, add in (("basename", writer.add_basename), ("finetune", writer.add_finetune),
                     ("size_label", writer.add_size_label)):
        if names.get(key):
            add(names[key])
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    a = args
    writer.add_context_length(int(context_length or a.max_positions))
    writer.add_embedding_length(a.hidden)
    writer.add_block_count(a.layers)
    writer.add_feed_forward_length(a.ffn)
    writer.add_head_count(a.heads)
    writer.add_head_count_kv(a.gguf_kv_heads)
    writer.add_layer_norm_rms_eps(a.eps)
    writer.add_rope_freq_base(a.rope_theta)
    writer.add_rope_dimension_count(a.rope_dims)
    writer.add_vocab_size(len(vocab.tokens))
    if a.head_dim != a.hidden // a.heads:
        writer.add_key_length(a.head_dim)
        writer.add_value_length(a.head_dim)
    scaling = a.rope_scaling or {}
    if rope_kind(a.rope_scaling, ALL_ROPE) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    # llama3 scaling travels as the rope_freqs.weight tensor (see gguf.py), not as metadata

    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.remove_extra_whitespaces is not None:
        writer.add_remove_extra_whitespaces(vocab.remove_extra_whitespaces)
    if vocab.precompiled_charsmap:
        writer.add_precompiled_charsmap(vocab.precompiled_charsmap)
    for role, idx in vocab.special_ids.items():
        writer.add_uint32(f"tokenizer.ggml.{SPECIAL_KEYS[role]}_token_id", idx)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if model.chat_template:
        writer.add_chat_template(model.chat_template)
