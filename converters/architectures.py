"""Supported architectures as data: HF class name -> GGUF architecture, tensor-name map, quirks.

Adding an architecture that shares the Llama block layout is one row here; nothing else branches on
architecture names.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedArchitectureError

# (HF name template, GGUF name template); "{i}" is the block index. Rows come from the Llama layout
# (LlamaForCausalLM), which Mistral and Qwen2 share; Qwen2 adds the q/k/v biases below.
LLAMA_TENSORS: tuple[tuple[str, str], ...] = (
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
    ("model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm.weight"),
    ("model.layers.{i}.self_attn.q_proj.weight", "blk.{i}.attn_q.weight"),
    ("model.layers.{i}.self_attn.k_proj.weight", "blk.{i}.attn_k.weight"),
    ("model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v.weight"),
    ("model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_output.weight"),
    ("model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.ffn_norm.weight"),
    ("model.layers.{i}.mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight"),
    ("model.layers.{i}.mlp.up_proj.weight", "blk.{i}.ffn_up.weight"),
    ("model.layers.{i}.mlp.down_proj.weight", "blk.{i}.ffn_down.weight"),
)
# Qwen2ForCausalLM: attention projections carry biases.
QKV_BIAS_TENSORS: tuple[tuple[str, str], ...] = (
    ("model.layers.{i}.self_attn.q_proj.bias", "blk.{i}.attn_q.bias"),
    ("model.layers.{i}.self_attn.k_proj.bias", "blk.{i}.attn_k.bias"),
    ("model.layers.{i}.self_attn.v_proj.bias", "blk.{i}.attn_v.bias"),
)
# Tensors some checkpoints carry that no runtime needs.
IGNORED_SUFFIXES: tuple[str, ...] = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class Architecture:
    hf_name: str
    gguf_arch: str               # llama.cpp's LLM_ARCH name
    tensors: tuple[tuple[str, str], ...]
    permute_qk: bool             # llama.cpp's llama arch wants Q/K rows interleaved for its RoPE
    qkv_bias: bool
    default_pre_tokenizer: str | None = None

    def tensor_map(self, num_layers: int) -> dict[str, str]:
        """HF tensor name -> GGUF tensor name, expanded for every block."""
        out: dict[str, str] = {}
        for hf, gg in self.tensors:
            if "{i}" in hf:
                for i in range(num_layers):
                    out[hf.format(i=i)] = gg.format(i=i)
            else:
                out[hf] = gg
        return out


ARCHITECTURES: dict[str, Architecture] = {
    a.hf_name: a
    for a in (
        Architecture("LlamaForCausalLM", "llama", LLAMA_TENSORS, permute_qk=True, qkv_bias=False),
        Architecture("MistralForCausalLM", "llama", LLAMA_TENSORS, permute_qk=True, qkv_bias=False),
        Architecture("Qwen2ForCausalLM", "qwen2", LLAMA_TENSORS + QKV_BIAS_TENSORS, permute_qk=False,
                     qkv_bias=True, default_pre_tokenizer="qwen2"),
    )
}
# GGUF architecture -> the HF class we rebuild it as (gguf_to_hf).
GGUF_TO_HF: dict[str, str] = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def get_architecture(hf_name: str) -> Architecture:
    arch = ARCHITECTURES.get(hf_name)
    if arch is None:
        raise UnsupportedArchitectureError(
            f"architecture {hf_name!r} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}")
    return arch


def permute_qk(w, n_head: int):  # noqa: ANN001, ANN201 - numpy in, numpy out
    """HF (rotate-half) row order -> llama.cpp (interleaved pairs) for Q or K, shape (n_head*hd, ...)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w, n_head: int):  # noqa: ANN001, ANN201
    """Inverse of permute_qk: llama.cpp row order -> HF row order."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))
