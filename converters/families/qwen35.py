"""Qwen3.5 dense (Qwen3_5ForCausalLM; the text model inside Qwen3_5ForConditionalGeneration), a hybrid: three
Gated DeltaNet (linear attention) layers per full-attention layer by default (layer_types or
full_attention_interval), every layer with an input RMSNorm, a post-attention RMSNorm and a SwiGLU MLP.

- RMSNorms multiply by (1 + weight), as Gemma's (input, post-attention, final, q/k norms); the gated norm
  inside the linear layers does not.
- Full attention: q_proj yields, per head, [query (head_dim), gate (head_dim)]; per-head q/k norms, NeoX RoPE on
  the first partial_rotary_factor*head_dim dims (interleaved M-RoPE: text tokens have equal positions on every
  section, so it is plain RoPE), output * sigmoid(gate) before o_proj.
- Gated DeltaNet: in_proj_qkv -> depthwise causal conv (linear_conv_kernel_dim taps) -> SiLU -> q, k, v heads;
  q, k L2-normalised, q scaled by 1/sqrt(key_head_dim); decay g = -exp(A_log) * softplus(a + dt_bias), beta =
  sigmoid(b); state S [k, v] per value head: S = S*exp(g); S += k (beta (v - S^T k))^T; out = S^T q; then
  RMSNorm(out) * silu(z) and out_proj.

llama.cpp `qwen35` stores -exp(A_log) (ssm_a), the conv kernel as [channels, taps], and, when there are more value
heads than key heads, the value heads in tiled order ([K0, K1, ..., K0, K1, ...]) so that repeating q/k tiles them;
the canonical form here is llama.cpp's (tiled heads, ssm_a), the block function computes with it. The recurrence
has no ONNX graph yet: ONNX export is refused with the GGUF route named. The vision tower and the multi-token
prediction head of the released checkpoints are not converted (declared, not silently skipped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError, ConversionError
from ..hf import ModelConfig
from .base import Args, AttnSpec, Family, Ops, TensorRule, minus_one, plus_one, text_config


@dataclass(frozen=True)
class Qwen35Args(Args):
    prefix: str = "model."                  # "model.language_model." inside the multimodal wrapper
    recurrent: tuple[bool, ...] = ()        # True where the layer is Gated DeltaNet
    interval: int = 4                       # full_attention_interval
    rotary: int = 64                        # rotated dims of each head
    sections: tuple[int, ...] = (11, 11, 10, 0)   # M-RoPE sections (llama.cpp rope.dimension_sections)
    k_heads: int = 16
    v_heads: int = 16
    k_dim: int = 128
    v_dim: int = 128
    conv: int = 4

    @property
    def rope_dims(self) -> int:
        return self.rotary

    @property
    def conv_dim(self) -> int:
        return 2 * self.k_heads * self.k_dim + self.v_heads * self.v_dim


def parse(c: ModelConfig) -> Qwen35Args:
    r = text_config(c)
    nested = r.get("rope_parameters")
    rope: dict[str, Any] = nested if isinstance(nested, dict) else {}
    if rope.get("rope_type", "default") != "default" or r.get("rope_scaling"):
        raise ConfigError("Qwen3.5 with a RoPE scaling other than its interleaved M-RoPE is not supported")
    if not r.get("attn_output_gate", True):
        raise ConfigError("Qwen3.5 without attn_output_gate is not a layout llama.cpp's qwen35 runs")
    n = c.num_layers
    interval = int(r.get("full_attention_interval") or 4)
    types = r.get("layer_types")
    if types is None:
        types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n)]
    if not isinstance(types, list) or len(types) != n or not set(types) <= {"linear_attention", "full_attention"}:
        raise ConfigError(f"Qwen3.5 config needs layer_types listing {n} of 'linear_attention'/'full_attention'")
    partial = float(rope.get("partial_rotary_factor", r.get("partial_rotary_factor", 0.25)))
    sections = list(rope.get("mrope_section") or [11, 11, 10])
    k_heads, v_heads = int(r.get("linear_num_key_heads", 16)), int(r.get("linear_num_value_heads", 16))
    k_dim, v_dim = int(r.get("linear_key_head_dim", 128)), int(r.get("linear_value_head_dim", 128))
    if v_heads % k_heads or k_dim != v_dim:
        raise ConfigError(f"Qwen3.5 linear attention with {k_heads} key heads of {k_dim} and {v_heads} value heads "
                          f"of {v_dim}: llama.cpp needs value heads a multiple of key heads and equal head sizes")
    rotary = int(c.head_dim * partial)
    if rotary % 2 or 2 * sum(sections) != rotary:
        raise ConfigError(f"Qwen3.5 mrope_section {sections} does not cover the {rotary} rotated dims")
    prefix = "model.language_model." if c.architecture.endswith("ConditionalGeneration") else "model."
    theta = float(rope.get("rope_theta", r.get("rope_theta", 10_000_000.0)))   # rope_parameters wins (transformers 5)
    return Qwen35Args(**{**Args.common(c), "rope_scaling": None, "rope_theta": theta}, prefix=prefix,
                      recurrent=tuple(t == "linear_attention" for t in types), interval=interval, rotary=rotary,
                      sections=tuple(sections + [0] * (4 - len(sections))), k_heads=k_heads, v_heads=v_heads,
                      k_dim=k_dim, v_dim=v_dim, conv=int(r.get("linear_conv_kernel_dim", 4)))


# -- value heads: grouped by key head in HF ([G0_v0, G0_v1, G1_v0, ...]), tiled in llama.cpp --------------------
def _tile(w: np.ndarray, a: Qwen35Args, width: int, axis: int = 0) -> np.ndarray:
    r = a.v_heads // a.k_heads
    w = np.moveaxis(np.asarray(w), axis, 0)
    out = w.reshape(a.k_heads, r, width, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)
    return np.moveaxis(out, 0, axis)


def _untile(w: np.ndarray, a: Qwen35Args, width: int, axis: int = 0) -> np.ndarray:
    r = a.v_heads // a.k_heads
    w = np.moveaxis(np.asarray(w), axis, 0)
    out = w.reshape(r, a.k_heads, width, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)
    return np.moveaxis(out, 0, axis)


def _qkv_in(w: np.ndarray, a: Qwen35Args) -> np.ndarray:
    """in_proj_qkv rows (or conv channels) [q; k; v]: only the v part is re-ordered."""
    qk = 2 * a.k_heads * a.k_dim
    return np.concatenate([w[:qk], _tile(w[qk:], a, a.v_dim)])


def _qkv_out(w: np.ndarray, a: Qwen35Args) -> np.ndarray:
    qk = 2 * a.k_heads * a.k_dim
    return np.concatenate([w[:qk], _untile(w[qk:], a, a.v_dim)])


def _a_in(w: np.ndarray, a: Qwen35Args) -> np.ndarray:
    return _tile(-np.exp(np.asarray(w, np.float64)), a, 1).astype(np.float32)


def _a_out(w: np.ndarray, a: Qwen35Args) -> np.ndarray:
    """A_log from ssm_a = -exp(A_log): the float32 nearest log(-ssm_a) whose -exp gives ssm_a back exactly when
    one does (so GGUF -> HF -> GGUF is bit-exact)."""
    target = np.asarray(_untile(w, a, 1), np.float32)
    guess = np.log(-target.astype(np.float64)).astype(np.float32)
    best = guess.copy()
    found = np.zeros(guess.shape, bool)
    for step in (0, 1, -1, 2, -2, 3, -3):
        cand = guess
        for _ in range(abs(step)):
            cand = np.nextafter(cand, np.float32(np.inf if step > 0 else -np.inf))
        hit = ~found & ((-np.exp(cand.astype(np.float64))).astype(np.float32) == target)
        best[hit], found = cand[hit], found | hit
    return best


def rules(a: Qwen35Args) -> tuple[TensorRule, ...]:
    p, L = a.prefix, a.prefix + "layers.{i}."
    attn_layers = lambda a: [i for i, rec in enumerate(a.recurrent) if not rec]   # noqa: E731
    lin_layers = lambda a: [i for i, rec in enumerate(a.recurrent) if rec]        # noqa: E731

    def norm(hf: str, gg: str, shape: Any, **kw: Any) -> TensorRule:
        return TensorRule(hf, gg, shape, to_canon=plus_one, from_canon=minus_one, **kw)

    def attn(hf: str, gg: str, shape: Any, **kw: Any) -> TensorRule:
        return TensorRule(L + "self_attn." + hf, gg, shape, layers=attn_layers, **kw)

    def lin(hf: str, gg: str, shape: Any, width: int | None = None, axis: int = 0, **kw: Any) -> TensorRule:
        if width is not None:
            kw.update(to_canon=lambda w, a: _tile(w, a, width, axis), from_canon=lambda w, a: _untile(w, a, width, axis))
        return TensorRule(L + "linear_attn." + hf, gg, shape, layers=lin_layers, **kw)

    return (
        TensorRule(p + "embed_tokens.weight", "token_embd.weight", lambda a: (a.vocab, a.hidden)),
        norm(p + "norm.weight", "output_norm.weight", lambda a: (a.hidden,)),
        TensorRule("lm_head.weight", "output.weight", lambda a: (a.vocab, a.hidden), optional=True),
        norm(L + "input_layernorm.weight", "blk.{i}.attn_norm.weight", lambda a: (a.hidden,)),
        norm(L + "post_attention_layernorm.weight", "blk.{i}.post_attention_norm.weight", lambda a: (a.hidden,)),
        TensorRule(L + "mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight", lambda a: (a.ffn, a.hidden)),
        TensorRule(L + "mlp.up_proj.weight", "blk.{i}.ffn_up.weight", lambda a: (a.ffn, a.hidden)),
        TensorRule(L + "mlp.down_proj.weight", "blk.{i}.ffn_down.weight", lambda a: (a.hidden, a.ffn)),
        attn("q_proj.weight", "blk.{i}.attn_q.weight", lambda a: (2 * a.q_rows, a.hidden)),   # per head: q, gate
        attn("k_proj.weight", "blk.{i}.attn_k.weight", lambda a: (a.kv_rows, a.hidden)),
        attn("v_proj.weight", "blk.{i}.attn_v.weight", lambda a: (a.kv_rows, a.hidden)),
        attn("o_proj.weight", "blk.{i}.attn_output.weight", lambda a: (a.hidden, a.q_rows)),
        norm(L + "self_attn.q_norm.weight", "blk.{i}.attn_q_norm.weight", lambda a: (a.head_dim,), layers=attn_layers),
        norm(L + "self_attn.k_norm.weight", "blk.{i}.attn_k_norm.weight", lambda a: (a.head_dim,), layers=attn_layers),
        lin("in_proj_qkv.weight", "blk.{i}.attn_qkv.weight", lambda a: (a.conv_dim, a.hidden),
            to_canon=_qkv_in, from_canon=_qkv_out),
        lin("in_proj_z.weight", "blk.{i}.attn_gate.weight", lambda a: (a.v_heads * a.v_dim, a.hidden), width=a.v_dim),
        lin("in_proj_b.weight", "blk.{i}.ssm_beta.weight", lambda a: (a.v_heads, a.hidden), width=1),
        lin("in_proj_a.weight", "blk.{i}.ssm_alpha.weight", lambda a: (a.v_heads, a.hidden), width=1),
        lin("A_log", "blk.{i}.ssm_a", lambda a: (a.v_heads,), to_canon=_a_in, from_canon=_a_out),
        lin("dt_bias", "blk.{i}.ssm_dt.bias", lambda a: (a.v_heads,), width=1),
        # Conv1d(groups=channels) weight [C, 1, taps] -> llama.cpp [C, taps], F32 (ggml_ssm_conv needs a float kernel)
        lin("conv1d.weight", "blk.{i}.ssm_conv1d.weight", lambda a: (a.conv_dim, 1, a.conv), keep_f32=True,
            gguf_shape=lambda a: (a.conv_dim, a.conv),
            to_canon=lambda w, a: _qkv_in(np.asarray(w).reshape(a.conv_dim, a.conv), a),
            from_canon=lambda w, a: _qkv_out(np.asarray(w), a).reshape(a.conv_dim, 1, a.conv)),
        lin("norm.weight", "blk.{i}.ssm_norm.weight", lambda a: (a.v_dim,)),
        lin("out_proj.weight", "blk.{i}.ssm_out.weight", lambda a: (a.hidden, a.v_heads * a.v_dim), width=a.v_dim,
            axis=1),
    )


# -- the math the Ops interface has no op for (numpy only: this family has no ONNX graph) -----------------------
def _np(x: Any) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ConversionError("Qwen3.5's Gated DeltaNet layers have no ONNX graph", "convert to GGUF instead")
    return x.astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


def _silu(x: np.ndarray) -> np.ndarray:
    return (x * _sigmoid(x)).astype(np.float32)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20)))).astype(np.float32)


def _l2norm(x: np.ndarray, eps: float) -> np.ndarray:
    return (x / np.maximum(np.sqrt((x * x).sum(-1, keepdims=True)), eps)).astype(np.float32)


def delta_rule(q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """The gated delta rule from a zero state. q, k [B, S, H, dk] (q already scaled), v [B, S, H, dv],
    g (log decay) and beta [B, S, H]; returns [B, S, H, dv]."""
    b, s, h, dk = k.shape
    state = np.zeros((b, h, dk, v.shape[-1]), np.float32)
    out = np.empty(v.shape, np.float32)
    for t in range(s):
        state = state * np.exp(g[:, t])[..., None, None]
        remembered = np.einsum("bhkv,bhk->bhv", state, k[:, t])
        delta = (v[:, t] - remembered) * beta[:, t][..., None]
        state = state + k[:, t][..., :, None] * delta[..., None, :]
        out[:, t] = np.einsum("bhkv,bhk->bhv", state, q[:, t])
    return out


def _linear_attention(ops: Ops[Any], a: Qwen35Args, i: int, w: dict[str, np.ndarray], x: Any) -> Any:
    qkv, z, b, alpha = ops.linear(x, f"layers.{i}.linear_attn.in_proj",
                                  [w["attn_qkv.weight"], w["attn_gate.weight"], w["ssm_beta.weight"],
                                   w["ssm_alpha.weight"]])
    mixed = _silu(_np(ops.causal_conv(qkv, w["ssm_conv1d.weight"], f"layers.{i}.linear_attn.conv1d")))
    bs, s = mixed.shape[:2]
    kd = a.k_heads * a.k_dim
    q = _l2norm(mixed[..., :kd].reshape(bs, s, a.k_heads, a.k_dim), a.eps)
    k = _l2norm(mixed[..., kd:2 * kd].reshape(bs, s, a.k_heads, a.k_dim), a.eps)
    v = mixed[..., 2 * kd:].reshape(bs, s, a.v_heads, a.v_dim)
    reps = a.v_heads // a.k_heads             # value heads are tiled: head j reads key head j % k_heads
    q, k = np.tile(q, (1, 1, reps, 1)) * np.float32(a.k_dim ** -0.5), np.tile(k, (1, 1, reps, 1))
    g = _softplus(_np(alpha) + w["ssm_dt.bias"]) * w["ssm_a"]
    out = delta_rule(q, k, v, g, _sigmoid(_np(b)))
    normed = out / np.sqrt(np.mean(out * out, -1, keepdims=True) + a.eps) * w["ssm_norm.weight"]
    gated = (normed * _silu(_np(z).reshape(out.shape))).reshape(bs, s, -1).astype(np.float32)
    (o,) = ops.linear(gated, f"layers.{i}.linear_attn.out_proj", [w["ssm_out.weight"]])
    return o


def _full_attention(ops: Ops[Any], a: Qwen35Args, i: int, w: dict[str, np.ndarray], x: Any) -> Any:
    wq = w["attn_q.weight"].reshape(a.heads, 2, a.head_dim, a.hidden)
    q, k, v, gate = ops.linear(x, f"layers.{i}.attn.qkv_proj",
                               [wq[:, 0].reshape(a.q_rows, a.hidden), w["attn_k.weight"], w["attn_v.weight"],
                                wq[:, 1].reshape(a.q_rows, a.hidden)])
    q = ops.head_norm(q, w["attn_q_norm.weight"], a.eps, a.heads, f"layers.{i}.attn.q_norm")
    k = ops.head_norm(k, w["attn_k_norm.weight"], a.eps, a.kv_heads, f"layers.{i}.attn.k_norm")
    spec = AttnSpec(a.heads, a.kv_heads, a.head_dim, a.head_dim ** -0.5, a.rope_theta, None, rotary=a.rotary)
    gated = _np(ops.attention(i, q, k, v, spec)) * _sigmoid(_np(gate))
    (o,) = ops.linear(gated, f"layers.{i}.attn.o_proj", [w["attn_output.weight"]])
    return o


def block(ops: Ops[Any], a: Qwen35Args, i: int, w: dict[str, np.ndarray], h: Any, delta: Any) -> tuple[Any, Any]:
    x, h = ops.add_norm(h, delta, w["attn_norm.weight"], a.eps, f"layers.{i}.input_layernorm")
    o = (_linear_attention if a.recurrent[i] else _full_attention)(ops, a, i, w, x)
    x, h = ops.add_norm(h, o, w["post_attention_norm.weight"], a.eps, f"layers.{i}.post_attention_layernorm")
    gate, up = ops.linear(x, f"layers.{i}.mlp.gate_up_proj", [w["ffn_gate.weight"], w["ffn_up.weight"]])
    (down,) = ops.linear(ops.gated(gate, up, "silu"), f"layers.{i}.mlp.down_proj", [w["ffn_down.weight"]])
    return h, down


def gguf_metadata(writer: Any, a: Qwen35Args) -> None:
    writer.add_ssm_conv_kernel(a.conv)
    writer.add_ssm_state_size(a.k_dim)
    writer.add_ssm_group_count(a.k_heads)
    writer.add_ssm_time_step_rank(a.v_heads)
    writer.add_ssm_inner_size(a.v_heads * a.v_dim)
    writer.add_full_attention_interval(a.interval)
    writer.add_array(f"{writer.arch}.attention.recurrent_layers", list(a.recurrent))
    writer.add_rope_dimension_sections(list(a.sections))


def hf_config(key: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    n, interval = cfg["num_hidden_layers"], int(key("full_attention_interval", 4))
    recurrent = key("attention.recurrent_layers", None)
    rec = [bool(x) for x in recurrent] if recurrent is not None else [(i + 1) % interval != 0 for i in range(n)]
    v_heads, sections = int(key("ssm.time_step_rank")), [int(s) for s in key("rope.dimension_sections", [])]
    partial = int(key("rope.dimension_count", cfg["head_dim"])) / cfg["head_dim"]
    return {"layer_types": ["linear_attention" if r else "full_attention" for r in rec],
            "full_attention_interval": interval, "linear_conv_kernel_dim": int(key("ssm.conv_kernel")),
            "linear_key_head_dim": int(key("ssm.state_size")), "linear_num_key_heads": int(key("ssm.group_count")),
            "linear_value_head_dim": int(key("ssm.inner_size")) // v_heads, "linear_num_value_heads": v_heads,
            "attn_output_gate": True, "partial_rotary_factor": partial,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg["rope_theta"], "partial_rotary_factor": partial,
                                "mrope_section": sections[:3], "mrope_interleaved": True}}


QWEN35 = Family("qwen35", ("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration"), "qwen35", "qwen3_5_text",
                parse, rules, block, gguf_metadata=gguf_metadata, hf_config=hf_config, rope_kinds=("default",),
                onnx_refusal="its Gated DeltaNet layers need a recurrent state cache the ONNX graph lacks",
                skipped=("model.visual.", "mtp."))
FAMILIES = (QWEN35,)
