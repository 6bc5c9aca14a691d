"""Tiny random-weight Llama checkpoints written as a Hugging Face folder (numpy + safetensors + tokenizers).

Used where edgellm needs *some* model and none may be downloaded: the llama.cpp kernel probe builds one per
quant family. Shapes are chosen so every kernel path llama.cpp has is taken: rows and columns are multiples of
256 (K-quant super-blocks) and of 32 (AMX tiles, repacked layouts).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .safetensors_io import write_safetensors
from .tokenizer import PRE_TOKENIZERS


def byte_level_tokenizer(specials: tuple[str, ...] = ("<|endoftext|>",)) -> dict:
    """A tokenizer.json with the 256 byte symbols, a few merges (GGUF needs some), then the specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [("t", "h"), ("h", "e"), ("i", "n"), ("e", "r"), ("a", "n")]
    vocab = {ch: i for i, ch in enumerate(alphabet + ["".join(m) for m in merges])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    data = json.loads(tok.to_str())
    data["pre_tokenizer"] = PRE_TOKENIZERS["gpt-2"]
    tok = Tokenizer.from_str(json.dumps(data))
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(specials))
    return json.loads(tok.to_str())


def write_tiny_llama(folder: str | Path, *, hidden: int = 256, layers: int = 1, heads: int = 4, kv_heads: int = 2,
                     ffn: int = 512, vocab: int = 512, seed: int = 0) -> Path:
    """Write config.json, model.safetensors (F32), tokenizer.json and tokenizer_config.json into `folder`."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads

    def w(*shape: int, scale: float = 0.08) -> np.ndarray:
        return rng.normal(0.0, scale, shape).astype(np.float32)

    tensors: dict[str, np.ndarray] = {"model.embed_tokens.weight": w(vocab, hidden, scale=0.5)}  # [vocab, hidden]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": 1 + w(hidden, scale=0.05),
            p + "post_attention_layernorm.weight": 1 + w(hidden, scale=0.05),
            p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": w(ffn, hidden),
            p + "mlp.up_proj.weight": w(ffn, hidden),
            p + "mlp.down_proj.weight": w(hidden, ffn),
        })
    tensors["model.norm.weight"] = 1 + w(hidden, scale=0.05)
    tensors["lm_head.weight"] = w(vocab, hidden, scale=0.5)
    write_safetensors(out / "model.safetensors", [(n, "F32", t.shape) for n, t in tensors.items()],
                      iter(tensors.items()))
    tok = byte_level_tokenizer()
    (out / "tokenizer.json").write_text(json.dumps(tok))
    eos = len(tok["model"]["vocab"])  # the special token follows the byte tokens and merges
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": eos, "eos_token_id": eos, "torch_dtype": "float32"}))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": False}))
    return out
