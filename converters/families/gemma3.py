"""Gemma 3 text (Gemma3ForCausalLM): the Gemma 2 block plus per-head q/k RMSNorms (also 1 + weight), no
attention soft-capping, five sliding layers per global one by default, and separate RoPE bases: sliding
layers use rope_local_base_freq unscaled, global layers rope_theta with any rope_scaling.

query_pre_attn_scalar is folded into the q norm (llama.cpp `gemma3` scales q by 1/sqrt(head_dim), or
1/sqrt(hidden/heads) for the 62-layer 27B)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..hf import ModelConfig
from .base import Family, TensorRule, minus_one, plus_one, text_config
from .gemma2 import GemmaArgs, block, gemma_args, gemma_rules, gguf_metadata, hf_config

SWA_PERIOD = 6     # llama.cpp's gemma3: five sliding layers, then a global one

_A = "model.layers.{i}.self_attn."


def parse(c: ModelConfig) -> GemmaArgs:
    raw = text_config(c)
    theta, scaling, local = c.rope_theta, c.rope_scaling, float(raw.get("rope_local_base_freq") or 10000.0)
    nested = raw.get("rope_parameters")
    if isinstance(nested, dict) and isinstance(nested.get("full_attention"), dict):   # transformers >= 4.56
        full, slide = nested["full_attention"], nested.get("sliding_attention") or {}
        theta = float(full.get("rope_theta", 1_000_000.0))
        scaling = full if full.get("rope_type", "default") != "default" else None
        local = float(slide.get("rope_theta", local))
    elif "rope_theta" not in raw:
        theta = 1_000_000.0
    return gemma_args(c, default_period=SWA_PERIOD, big_layers=62, theta=theta, local_theta=local, scaling=scaling)


def _q_norm_in(w: np.ndarray, a: GemmaArgs) -> np.ndarray:
    return (np.asarray(w, np.float32) + np.float32(1.0)) * np.float32(a.q_fold)


def _q_norm_out(w: np.ndarray, a: GemmaArgs) -> np.ndarray:
    return np.asarray(w, np.float32) / np.float32(a.q_fold) - np.float32(1.0)


def rules(a: GemmaArgs) -> tuple[TensorRule, ...]:
    return gemma_rules(fold_q_into_weight=False) + (
        TensorRule(_A + "q_norm.weight", "blk.{i}.attn_q_norm.weight", lambda a: (a.head_dim,),
                   to_canon=_q_norm_in, from_canon=_q_norm_out),
        TensorRule(_A + "k_norm.weight", "blk.{i}.attn_k_norm.weight", lambda a: (a.head_dim,),
                   to_canon=plus_one, from_canon=minus_one),
    )


def _hf_config(key: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    out = hf_config(key, cfg, local_theta=10000.0)     # llama.cpp's default for gemma3
    out.pop("attn_logit_softcapping")
    out.setdefault("rope_local_base_freq", float(key("rope.freq_base_swa", 10000.0)))
    return out


GEMMA3 = Family("gemma3", ("Gemma3ForCausalLM",), "gemma3", "gemma3_text", parse, rules, block,
                gguf_metadata=gguf_metadata, hf_config=_hf_config, embed_scale=lambda a: a.hidden ** 0.5,
                final_softcap=lambda a: a.final_softcap, swa_period=SWA_PERIOD)
FAMILIES = (GEMMA3,)
