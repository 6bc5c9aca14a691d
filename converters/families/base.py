"""What a model family declares, as data plus one block function.

A family module (llama.py, qwen3.py, gemma3.py, ...) defines an args dataclass read from config.json, a table
of `TensorRule`s (HF name <-> GGUF name, expected shape, transforms), the GGUF metadata it needs, and ONE
decoder-block function written against the `Ops` interface (ops.py). The ONNX builder passes ops that emit
graph nodes; the numpy reference and the GPTQ calibration pass ops that compute.

Three forms of a weight appear:
- HF: as stored in the checkpoint;
- canonical: what the block function multiplies with (e.g. Gemma's norm weights with their +1 applied);
- GGUF: canonical, plus llama.cpp's storage quirks (the Q/K row permutation of the `llama` architecture).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

import numpy as np

from ...errors import ConversionError, ModelFormatError
from ..hf import ModelConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Args:
    """The config.json facts every family has; families subclass it with their own fields."""
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_positions: int
    tied: bool

    @classmethod
    def common(cls, c: ModelConfig) -> dict[str, Any]:
        return dict(hidden=c.hidden_size, layers=c.num_layers, heads=c.num_heads, kv_heads=c.num_kv_heads,
                    head_dim=c.head_dim, ffn=c.intermediate_size, vocab=c.vocab_size, eps=c.rms_norm_eps,
                    rope_theta=c.rope_theta, rope_scaling=c.rope_scaling, max_positions=c.max_position_embeddings,
                    tied=c.tie_word_embeddings)

    @property
    def q_rows(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_rows(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def rope_dims(self) -> int:
        """Dims of each head that RoPE rotates (llama.cpp's rope.dimension_count)."""
        return self.head_dim

    @property
    def gguf_kv_heads(self) -> int | list[int]:
        """llama.cpp's head_count_kv: one number, or one per layer (0 marks a recurrent layer)."""
        return self.kv_heads


Shape = Callable[[Any], tuple[int, ...]]          # args -> numpy shape
Transform = Callable[[np.ndarray, Any], np.ndarray]  # (weight, args) -> weight


@dataclass(frozen=True)
class TensorRule:
    """One tensor: HF name, GGUF name ("{i}" = block index), shape, and how its values change between forms.

    to_canon/from_canon map HF values to the block's values and back (Gemma's norm offset); permute names
    the llama.cpp Q/K row permutation applied on the GGUF side only ("q" or "k"), for architectures that
    want it. optional tensors may be absent (biases some checkpoints omit, an untied head)."""
    hf: str
    gguf: str
    shape: Shape
    to_canon: Transform | None = None
    from_canon: Transform | None = None
    permute: str | None = None
    optional: bool = False
    layers: Callable[[Any], Any] | None = None    # args -> the block indices it exists in (None: every block)
    gguf_shape: Shape | None = None               # numpy shape in GGUF when a transform reshapes it
    keep_f32: bool = False                        # stored F32 whatever the quant (llama.cpp's ops need it)

    @property
    def per_block(self) -> bool:
        return "{i}" in self.hf

    @property
    def role(self) -> str:
        """The key the block function reads it by: the GGUF name without its block prefix."""
        return self.gguf.split(".", 2)[2] if self.per_block else self.gguf


@dataclass(frozen=True)
class AttnSpec:
    """Everything attention needs beyond q, k, v [B, S, heads*head_dim]."""
    heads: int
    kv_heads: int
    head_dim: int
    scale: float                       # multiplies q.k
    rope_theta: float | None           # None: no rotary (NoPE layers)
    rope_scaling: dict[str, Any] | None = None
    window: int | None = None          # sliding window: key j visible to query i when i - j < window
    softcap: float | None = None       # scores -> softcap * tanh(scores / softcap)
    rotary: int | None = None          # rotated dims when only part of each head is rotated (None: all)

    @property
    def rotary_dim(self) -> int:
        return self.rotary or self.head_dim


class Ops(Generic[T]):
    """The small interface a block function is written against (see ops.py for the numpy version and
    onnx_block_ops.py for the graph-emitting one). `name` arguments are stable per-layer names used for
    quantization specs and calibration ("layers.3.attn.qkv_proj")."""

    def linear(self, x: T, name: str, weights: list[np.ndarray], biases: list[np.ndarray | None] | None = None
               ) -> list[T]:
        """x @ concat(weights).T (+ biases), split back into one output per weight (one fused matmul)."""
        raise NotImplementedError

    def norm(self, x: T, weight: np.ndarray, eps: float, name: str) -> T:
        """RMS norm over the last axis times `weight` (canonical values: offsets already applied)."""
        raise NotImplementedError

    def add_norm(self, residual: T, delta: T | None, weight: np.ndarray, eps: float, name: str) -> tuple[T, T]:
        """(norm(residual + delta), residual + delta); delta None means just norm(residual)."""
        raise NotImplementedError

    def add(self, a: T, b: T) -> T:
        raise NotImplementedError

    def scale(self, x: T, factor: float) -> T:
        raise NotImplementedError

    def mul(self, a: T, b: T) -> T:
        raise NotImplementedError

    def causal_conv(self, x: T, weight: np.ndarray, name: str) -> T:
        """Depthwise causal convolution along the sequence: x [B, S, D], weight [D, L];
        out[t] = sum_j weight[:, j] * x[t - (L - 1) + j] (zeros before the first token)."""
        raise NotImplementedError

    def head_norm(self, x: T, weight: np.ndarray, eps: float, heads: int, name: str) -> T:
        """RMS norm of each head: x [B, S, heads*hd] viewed as [B, S, heads, hd], weight [hd]."""
        raise NotImplementedError

    def gated(self, gate: T, up: T, act: str) -> T:
        """act(gate) * up; act is "silu" or "gelu_tanh"."""
        raise NotImplementedError

    def attention(self, layer: int, q: T, k: T, v: T, spec: AttnSpec) -> T:
        """Rotary, KV cache, causal (and window) mask, softmax; returns [B, S, heads*hd]."""
        raise NotImplementedError


BlockFn = Callable[[Ops[Any], Any, int, dict[str, np.ndarray], Any, Any], tuple[Any, Any]]


@dataclass(frozen=True)
class Family:
    """A model family as data: the registry maps HF class names to one of these."""
    name: str                                   # "llama", "qwen3", "gemma3"
    hf_classes: tuple[str, ...]                 # the HF `architectures` names it converts
    gguf_arch: str                              # llama.cpp's LLM_ARCH name
    model_type: str                             # config.json model_type when rebuilt from GGUF
    parse: Callable[[ModelConfig], Args]        # config.json -> typed args
    tensors: Callable[[Any], tuple[TensorRule, ...]]
    block: BlockFn                              # (ops, args, layer, weights, residual, delta) -> (residual, delta)
    gguf_metadata: Callable[[Any, Any], None] = lambda writer, args: None   # family keys beyond the common ones
    # GGUF -> HF: family keys of config.json, from (metadata reader key(name, default), the config so far)
    hf_config: Callable[[Callable[[str, Any], Any], dict[str, Any]], dict[str, Any]] = lambda key, cfg: {}
    embed_scale: Callable[[Any], float | None] = lambda args: None          # hidden *= this after the lookup
    final_softcap: Callable[[Any], float | None] = lambda args: None        # logits soft-capping
    logit_scale: Callable[[Any], float | None] = lambda args: None          # logits *= this (before capping)
    gguf_tensors: Callable[[Any], list[tuple[str, np.ndarray]]] = lambda args: []  # GGUF-only tensors (F32)
    rope_kinds: tuple[str, ...] = ("default", "linear", "llama3")                 # RoPE scalings it handles
    rebuilds_gguf: bool = True        # GGUF -> HF rebuilds its gguf_arch as this family (one per architecture)
    onnx_refusal: str | None = None   # why this family has no ONNX export (None: it has one)
    final_norm: str = "output_norm.weight"    # GGUF name of the norm before the LM head
    skipped: tuple[str, ...] = ()     # HF name prefixes deliberately not converted (a vision tower, an MTP head)
    # llama.cpp's built-in sliding-window period for this architecture, used when a GGUF has a sliding window
    # but no `attention.sliding_window_pattern` (every period-th layer global; 0: no built-in pattern)
    swa_period: int = 0

    def rules(self, args: Any) -> tuple[TensorRule, ...]:
        return self.tensors(args)

    def hf_to_gguf(self, args: Any) -> dict[str, tuple[str, TensorRule]]:
        """HF tensor name -> (GGUF name, rule), expanded for every block."""
        out: dict[str, tuple[str, TensorRule]] = {}
        for r in self.rules(args):
            blocks = (r.layers(args) if r.layers is not None else range(args.layers)) if r.per_block else (None,)
            for i in blocks:
                out[r.hf.format(i=i)] = (r.gguf.format(i=i), r)
        return out


def text_config(c: ModelConfig) -> dict[str, Any]:
    """The config.json keys of the language model: `text_config` inside multimodal wrappers, else the top level."""
    nested = c.raw.get("text_config")
    return nested if isinstance(nested, dict) else c.raw


def check_tensors(family: Family, args: Any, present: dict[str, tuple[int, ...]], source: str,
                  ignored: tuple[str, ...] = ("rotary_emb.inv_freq",)) -> list[tuple[str, str, TensorRule]]:
    """(HF name, GGUF name, rule) for every tensor the checkpoint holds, in rule order; an unknown tensor, a
    missing required one or a shape that disagrees with config.json is an error."""
    mapping = family.hf_to_gguf(args)
    unknown = [n for n in present if n not in mapping and not n.endswith(ignored) and not n.startswith(family.skipped)]
    skipped = sum(1 for n in present if n not in mapping and n.startswith(family.skipped))
    if skipped:
        logging.getLogger(__name__).info("%s: %d tensors under %s are not converted (declared by the %s family)",
                                         source, skipped, ", ".join(family.skipped), family.name)
    if unknown:
        raise ConversionError(f"{len(unknown)} tensors have no GGUF name in the {family.name} family, e.g. "
                              f"{unknown[0]}", "the checkpoint does not match its config.json architecture")
    plan = []
    for hf, (gg, rule) in mapping.items():
        if hf not in present:
            if rule.optional:
                continue
            raise ModelFormatError(f"tensor {hf} is missing from {source}")
        want, got = tuple(rule.shape(args)), tuple(present[hf])
        if got != want:
            raise ModelFormatError(f"tensor {hf} has shape {got}, config.json implies {want}",
                                   "config.json and the weights disagree; use the config shipped with them")
        plan.append((hf, gg, rule))
    return plan


# -- transforms --------------------------------------------------------------------------------------------
def plus_one(w: np.ndarray, _args: Any) -> np.ndarray:
    """Gemma's RMSNorm multiplies by (1 + weight): the canonical value is weight + 1."""
    return np.asarray(w, np.float32) + np.float32(1.0)


def minus_one(w: np.ndarray, _args: Any) -> np.ndarray:
    return np.asarray(w, np.float32) - np.float32(1.0)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF (rotate-half) row order -> llama.cpp (interleaved pairs) for Q or K, shape (n_head*hd, ...)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of permute_qk: llama.cpp row order -> HF row order."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def to_gguf(w: np.ndarray, rule: TensorRule, args: Any) -> np.ndarray:
    """HF values -> the values stored in GGUF."""
    if rule.to_canon is not None:
        w = rule.to_canon(w, args)
    if rule.permute is not None:
        w = permute_qk(w, args.heads if rule.permute == "q" else args.kv_heads)
    return w


def from_gguf(w: np.ndarray, rule: TensorRule, args: Any) -> np.ndarray:
    """GGUF values -> HF values (the inverse of to_gguf)."""
    if rule.permute is not None:
        w = unpermute_qk(w, args.heads if rule.permute == "q" else args.kv_heads)
    if rule.from_canon is not None:
        w = rule.from_canon(w, args)
    return w


def to_canon(w: np.ndarray, rule: TensorRule, args: Any) -> np.ndarray:
    return w if rule.to_canon is None else rule.to_canon(w, args)
