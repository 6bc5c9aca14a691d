"""Predict the GGML type of every tensor of a GGUF before converting: edgellm's own writer for the native types
(F32/F16/BF16/Q8_0), llama.cpp's quantizer for the rest.

The planner needs the artifact's real size, and on models whose rows are not a multiple of 256 (SmolLM2-135M:
576) most K-quant tensors fall back to 32-block types; the _M/_S recipes also upgrade some tensors (attn_v,
ffn_down, the output head). These rules mirror llama.cpp's `src/llama-quant.cpp` (`llama_tensor_get_type_impl`,
`tensor_type_fallback`, `tensor_allows_quantization`, the tensor order of `llama_model_loader::weights_map`)
for the dense, non-MoE families edgellm converts; tests/devices/test_quant_plan.py checks them tensor by
tensor against files the quantizer wrote. Reading the HF folder touches headers only (no tensor data).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConversionError
from .gguf_types import get_quant, native_type_for

# ggml block sizes of the types the rules produce
_BLOCK: dict[str, int] = {
    "F32": 1, "F16": 1, "BF16": 1, "Q4_0": 32, "Q4_1": 32, "Q5_0": 32, "Q5_1": 32, "Q8_0": 32, "IQ4_NL": 32,
    "Q2_K": 256, "Q3_K": 256, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "IQ4_XS": 256, "IQ3_S": 256,
    "IQ3_XXS": 256, "IQ2_XXS": 256, "IQ2_XS": 256, "IQ2_S": 256, "IQ1_S": 256, "IQ1_M": 256,
    "TQ1_0": 256, "TQ2_0": 256,
}
# tensor_type_fallback: a 256-block type whose rows do not divide -> this 32-block type (F16 if that fails too)
_FALLBACK: dict[str, str] = {
    "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL",
    "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL",
    "Q2_K": "Q4_0", "Q3_K": "Q4_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}
# name fragments tensor_allows_quantization keeps in their input type (the ones our families can hold)
_NEVER_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
                    "ssm_conv1d", "shortconv.conv.weight", "attn_rel_b.weight", "position_embd", "token_types")
_IQ_LOW = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
_BLK = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True)
class PlannedTensor:
    name: str                 # GGUF name
    shape: tuple[int, ...]    # ggml ne order (innermost first), as GGUF stores it
    type: str                 # GGML type it will have in the artifact


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for fragment, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                          ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                          ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                          ("ffn_down", "ffn_down")):
        if fragment in name:
            return "attn_qkv" if fragment == "attn_qkv.weight" else cat
    return "other"


def _loader_order(name: str) -> tuple[int, str]:
    """llama_model_loader's weights_map order: global tensors first, then by block index, then by name."""
    m = _BLK.match(name)
    return (int(m.group(1)) if m else -1, name)


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _fallback(ncols: int, target: str) -> str:
    block = _BLOCK.get(target, 1)
    if ncols % block == 0:
        return target
    out = _FALLBACK.get(target, target)
    return out if ncols % _BLOCK.get(out, 1) == 0 else "F16"


class _Rules:
    """llama_tensor_get_type_impl for one file: the counters walk the tensors in the loader's order."""

    def __init__(self, quant: str, arch: str, n_gqa: int, n_layer: int, n_attn_v: int, tied: bool,
                 is_70b: bool, imatrix: bool = False) -> None:
        self.q, self.arch, self.gqa, self.n_layer, self.n_attn_v = quant, arch, n_gqa, n_layer, n_attn_v
        self.tied, self.is_70b, self.imatrix = tied, is_70b, imatrix
        self.i_attn_v = self.i_down = 0

    def pick(self, name: str, ncols: int, new: str) -> str:
        q, cat = self.q, _category(name)
        if cat == "output" or (self.tied and cat == "token_embd"):
            if self.arch == "falcon" or ncols % _BLOCK.get(new, 1):
                return "Q8_0"
            if q in _IQ_LOW or q == "IQ3_XXS":
                return "Q5_K"
            return new if new == "Q8_0" else "Q6_K"
        if cat == "token_embd":
            return {"IQ2_XXS": "Q2_K", "IQ2_XS": "Q2_K", "IQ1_S": "Q2_K", "IQ1_M": "Q2_K", "IQ2_S": "IQ3_S",
                    "IQ2_M": "IQ3_S", "IQ3_XXS": "IQ3_S", "TQ1_0": "Q4_K", "TQ2_0": "Q4_K"}.get(q, new)
        if q in _IQ_LOW:
            return self._iq_low(cat, new)
        if cat in ("attn_v", "attn_qkv"):   # category_is_attn_v: a fused QKV takes the attn_v branch
            return self._attn_v(new)
        if cat == "attn_k":
            return {"IQ3_XS": "IQ3_XXS", "IQ3_XXS": "IQ2_S"}.get(q, new)
        if cat == "attn_q":
            return {"IQ3_XS": "IQ3_XXS", "IQ3_XXS": "IQ2_S"}.get(q, new)
        if cat == "ffn_down":
            return self._ffn_down(new)
        if cat == "attn_output":
            if self.arch == "falcon":
                return "Q4_K" if q == "Q3_K_L" else new
            return {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}.get(q, new)
        return new   # ffn_gate/ffn_up only change for IQ3_XS, which needs an imatrix here

    def _iq_low(self, cat: str, new: str) -> str:
        q = self.q
        if cat in ("attn_v", "attn_qkv"):
            self.i_attn_v += 1
            if self.gqa >= 4:
                return "Q4_K"
            return "IQ3_S" if q in ("IQ2_S", "IQ2_M") else "Q2_K"
        if cat == "ffn_down":
            i = self.i_down
            self.i_down += 1
            if i < self.n_layer // 8:
                return "IQ3_S" if q in ("IQ2_S", "IQ2_M") else "Q2_K"
            return new
        if cat == "attn_output":
            return {"IQ1_S": "IQ2_XXS", "IQ1_M": "IQ2_XXS", "IQ2_S": "IQ3_S", "IQ2_M": "IQ3_S"}.get(q, new)
        return new

    def _attn_v(self, new: str) -> str:
        q, g, i = self.q, self.gqa, self.i_attn_v
        if q == "Q2_K":
            new = "Q4_K" if g >= 4 else "Q3_K"
        elif q == "Q2_K_S" and g >= 4:
            new = "Q4_K"
        elif q == "IQ3_XXS":
            new = "Q4_K" if g >= 4 else "IQ3_XXS" if self.imatrix else "IQ3_S"
        elif q in ("IQ3_XS", "IQ3_S") and g >= 4:
            new = "Q4_K"
        elif q == "IQ3_M":
            new = "Q4_K"
        elif q == "Q3_K_M":
            new = "Q5_K" if i < 2 else "Q4_K"
        elif q == "Q3_K_L":
            new = "Q5_K"
        elif q in ("IQ4_NL", "IQ4_XS") and g >= 4:
            new = "Q5_K"
        elif q in ("Q4_K_M", "Q5_K_M") and _more_bits(i, self.n_attn_v):
            new = "Q6_K"
        elif q == "Q4_K_S" and i < 4:
            new = "Q5_K"
        if self.is_70b and new in ("Q3_K", "Q4_K"):
            new = "Q5_K"
        self.i_attn_v += 1
        return new

    def _ffn_down(self, new: str) -> str:
        q, i, n = self.q, self.i_down, self.n_layer
        falcon = self.arch == "falcon"
        if q == "Q2_K":
            new = "Q3_K"
        elif q == "Q2_K_S":
            new = "Q4_K" if i < n // 8 else new
        elif q == "IQ3_XXS" and not self.imatrix:
            new = "Q4_K" if i < n // 8 else "Q3_K"
        elif q == "Q3_K_M":
            new = "Q5_K" if i < n // 16 else ("Q4_K" if not falcon or _more_bits(i, n) else "Q3_K")
        elif q == "IQ3_M" and i < n // 8:
            new = "Q4_K"
        elif q == "Q3_K_L":
            new = "Q4_K" if falcon else "Q5_K"
        elif q == "Q4_K_M":
            if falcon:
                new = "Q6_K" if i < n // 16 else ("Q5_K" if _more_bits(i, n) else "Q4_K")
            elif _more_bits(i, n):
                new = "Q6_K"
        elif i < n // 8 and q in ("IQ4_NL", "IQ4_XS") and not self.imatrix:
            new = "Q5_K"
        elif q == "Q5_K_M" and _more_bits(i, n):
            new = "Q6_K"
        elif q == "Q4_K_S" and not falcon and i < n // 8:
            new = "Q5_K"
        elif q in ("Q4_0", "Q5_0") and self.imatrix and i < n // 8:   # guard against early ffn_down outliers
            new = "Q4_1" if q == "Q4_0" else "Q5_1"
        self.i_down += 1
        return new


def _allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and name.endswith("weight") and not any(f in name for f in _NEVER_QUANTIZED)


def llama_quantize_types(tensors: Sequence[PlannedTensor], quant: str, *, arch: str, n_head: int,
                         n_head_kv: int | Sequence[int], n_layer: int, imatrix: bool = False) -> list[PlannedTensor]:
    """The types llama.cpp's quantizer gives each tensor of an input GGUF (`tensors` hold the input types) at
    `quant` (a recipe name such as "Q4_K_M"), without running it. Returned in the input's order.
    imatrix: whether the quantizer gets an importance matrix (some rules differ: Q4_0's first ffn_down, IQ3_XXS,
    IQ4_NL/IQ4_XS)."""
    q = get_quant(quant)
    kv0 = int(n_head_kv[0]) if isinstance(n_head_kv, Sequence) and not isinstance(n_head_kv, str) else int(n_head_kv)
    n_gqa = n_head // kv0 if kv0 else 0
    names = {t.name for t in tensors}
    rules = _Rules(q.name, arch, n_gqa, n_layer, sum(_category(n) in ("attn_v", "attn_qkv") for n in names),
                   tied="output.weight" not in names, is_70b=arch == "llama" and n_layer == 80, imatrix=imatrix)
    out: dict[str, PlannedTensor] = {}
    for t in sorted(tensors, key=lambda t: _loader_order(t.name)):
        if not _allows_quantization(t.name, t.shape):
            out[t.name] = t
            continue
        new = rules.pick(t.name, t.shape[0], q.main_type)
        out[t.name] = PlannedTensor(t.name, t.shape, _fallback(t.shape[0], new))
    return [out[t.name] for t in tensors]


# -- an HF folder's GGUF, as edgellm's converter will write it ----------------------------------------------
@dataclass(frozen=True)
class GGUFLayout:
    """What the planner needs of the GGUF an HF folder converts to (no data read)."""
    arch: str                                  # llama.cpp architecture
    family: str
    args: Any                                  # the family's typed args
    source_type: str                           # the intermediate llama.cpp quantizes from (F16/BF16/F32)
    tensors: tuple[tuple[str, tuple[int, ...], bool], ...]   # (GGUF name, ne shape, keep_f32)
    refusals: tuple[tuple[str, str], ...] = ()   # (format, why the converter refuses it for this model)

    def types(self, quant: str, imatrix: bool = False) -> list[PlannedTensor]:
        """Every tensor of the artifact at `quant`, with its predicted GGML type (imatrix: quantized with an
        importance matrix)."""
        q = get_quant(quant)
        base = get_quant(self.source_type) if not q.native else q

        def native(name: str, ne: tuple[int, ...], keep: bool) -> str:
            return "F32" if keep else native_type_for(base, name, tuple(reversed(ne)))

        first = [PlannedTensor(n, ne, native(n, ne, k)) for n, ne, k in self.tensors]
        if q.native:
            return first
        a = self.args
        return llama_quantize_types(first, q.name, arch=self.arch, n_head=a.heads, n_head_kv=a.gguf_kv_heads,
                                    n_layer=a.layers, imatrix=imatrix)


def gguf_layout(model_dir: str | Path) -> GGUFLayout:
    """The GGUF tensor list of an HF folder as converters/gguf.py writes it: the family's tensor rules over the
    checkpoint's tensors, plus the tensors llama.cpp needs that the checkpoint lacks (rope factors, family
    extras). Unknown architectures raise UnsupportedArchitectureError; tensors the family does not know
    raise ConversionError."""
    from .architectures import get_family
    from .families.base import check_tensors
    from .hf import read_hf_model
    from .rope import llama_cpp_freq_factors

    with read_hf_model(model_dir) as model:
        family = get_family(model.config.architecture)
        args = family.parse(model.config)
        infos = model.tensor_infos()
        rows = check_tensors(family, args, {n: tuple(i.shape) for n, i in infos.items()}, str(model.path))
        torch_dtype = (model.config.torch_dtype or "").lower()
    tensors = []
    for hf, gg, rule in rows:
        shape = tuple(rule.gguf_shape(args)) if rule.gguf_shape else tuple(infos[hf].shape)
        tensors.append((gg, tuple(reversed(shape)), rule.keep_f32))
    factors = llama_cpp_freq_factors(args.head_dim, args.rope_theta, args.rope_scaling)
    if factors is not None:
        tensors.append(("rope_freqs.weight", tuple(reversed(factors.shape)), True))
    tensors += [(name, tuple(reversed(getattr(data, "shape", ()) or (len(data),))), True)
                for name, data in family.gguf_tensors(args)]
    source = {"bfloat16": "BF16", "bf16": "BF16", "float32": "F32", "fp32": "F32"}.get(torch_dtype, "F16")
    refusals = []
    try:   # the family refuses configs llama.cpp cannot express while writing its metadata: ask it the same way
        family.gguf_metadata(_NullWriter(family.gguf_arch), args)
    except ConversionError as exc:
        refusals.append(("gguf", exc.message + (f" ({exc.hint})" if exc.hint else "")))
    if family.onnx_refusal:
        refusals.append(("onnx", f"{family.name}: {family.onnx_refusal}"))
    return GGUFLayout(family.gguf_arch, family.name, args, source, tuple(tensors), tuple(refusals))


class _NullWriter:
    """Takes the metadata calls of a family's gguf_metadata and writes nothing (only its refusals matter)."""

    def __init__(self, arch: str) -> None:
        self.arch = arch

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@dataclass(frozen=True)
class MemoryFacts:
    """The per-layer facts llama.cpp's memory follows, read from a family's typed args."""
    layer_kv_heads: tuple[int, ...]     # 0 for a recurrent layer (no KV cache)
    sliding_window: int
    swa_layers: tuple[bool, ...]
    recurrent_state_bytes: int          # F32, one sequence, all recurrent layers


def memory_facts(args: Any) -> MemoryFacts:
    """Per-layer KV heads, sliding-window layers and recurrent state from a family's args (the fields the
    families declare: `swa_layers`/`sliding_window` (Gemma 2/3, EXAONE 4), `conv_layers`/`l_cache` (LFM2's short
    convolutions: llama.cpp keeps n_embd x (L - 1) floats per layer), `recurrent` (Qwen3.5's Gated DeltaNet:
    (conv - 1) x conv_dim conv floats plus a k_dim x v_dim state per value head)."""
    n = args.layers
    conv = tuple(getattr(args, "conv_layers", ()) or ())
    rec = tuple(getattr(args, "recurrent", ()) or ())
    stateful = tuple(bool(conv[i]) if i < len(conv) else bool(rec[i]) if i < len(rec) else False for i in range(n))
    per_layer_state = 0
    if conv:
        per_layer_state = args.hidden * (int(getattr(args, "l_cache", 3)) - 1) * 4
    elif rec:
        per_layer_state = ((args.conv - 1) * args.conv_dim + args.k_dim * args.v_heads * args.v_dim) * 4
    window = int(getattr(args, "sliding_window", 0) or 0)
    swa = tuple(bool(x) for x in (getattr(args, "swa_layers", ()) or ())) if window else ()
    # Phi-3 declares a window llama.cpp does not apply: only families with a per-layer pattern slide
    return MemoryFacts(tuple(0 if s else args.kv_heads for s in stateful), window if any(swa) else 0, swa,
                       per_layer_state * sum(stateful))


def gguf_header_bytes(model_dir: str | Path, n_tensors: int) -> int:
    """Predicted bytes of a converted GGUF before its tensor data: the vocabulary (each token a length-prefixed
    string plus its type), the merges, the chat template, and the tensor directory with its alignment
    padding. Read from tokenizer.json / tokenizer_config.json without building the vocabulary."""
    from .limits import load_json

    folder = Path(model_dir)
    total = 4096 + n_tensors * (8 + 40 + 4 + 4 * 8 + 4 + 8 + 16)   # fixed keys; name, dims, type, offset, padding
    path = folder / "tokenizer.json"
    if path.is_file():
        tok = load_json(path)
        model = tok.get("model") if isinstance(tok.get("model"), dict) else {}
        vocab = model.get("vocab") or {}
        pieces = list(vocab) if isinstance(vocab, dict) else [v[0] for v in vocab if isinstance(v, list) and v]
        pieces += [a.get("content", "") for a in tok.get("added_tokens") or [] if isinstance(a, dict)]
        total += sum(8 + len(str(p).encode()) + 4 for p in pieces)   # string + token type (+ SPM scores)
        merges = model.get("merges") or []
        total += sum(8 + len((m if isinstance(m, str) else " ".join(map(str, m))).encode()) for m in merges)
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = load_json(config).get("chat_template")
        total += len(template.encode()) if isinstance(template, str) else 0
    return total


def gguf_memory_facts(key: Callable[[str, Any], Any], layers: int, hidden: int, arch: str = "") -> dict[str, Any]:
    """See _gguf_memory_facts; a malformed key is a ModelFormatError naming it. arch: the GGUF architecture, whose
    family may carry llama.cpp's built-in sliding-window period (files without a pattern key: Gemma 2/3)."""
    from ..errors import EdgeLLMError, ModelFormatError
    from .architectures import family_for_gguf

    try:
        period = family_for_gguf(arch).swa_period if arch else 0
    except EdgeLLMError:
        period = 0
    try:
        facts = _gguf_memory_facts(key, layers, hidden, period)
    except (TypeError, ValueError, IndexError) as exc:
        raise ModelFormatError(f"GGUF memory keys (head_count_kv, sliding_window, ssm.*) are malformed: {exc}",
                               "the file is damaged or was written by a broken converter") from None
    if any(n < 0 for n in facts["layer_kv_heads"]) or facts["recurrent_state_bytes"] < 0:
        raise ModelFormatError("GGUF memory keys hold negative sizes", "the file is damaged")
    return facts


def _gguf_memory_facts(key: Callable[[str, Any], Any], layers: int, hidden: int, period: int = 0) -> dict[str, Any]:
    """Per-layer KV heads, sliding-window layers and recurrent state from the GGUF keys llama.cpp reads
    (`attention.head_count_kv` per layer, `attention.sliding_window[_pattern]`, `attention.recurrent_layers`,
    `shortconv.l_cache`, `ssm.*`), sized with llama.cpp's n_embd_r/n_embd_s formulas (F32, one sequence)."""
    kv = key("attention.head_count_kv", None)
    per_layer = [int(v) for v in kv] if kv is not None and hasattr(kv, "__len__") else []
    recurrent = key("attention.recurrent_layers", None)
    rec = [bool(x) for x in recurrent] if recurrent is not None and hasattr(recurrent, "__len__") else []
    if rec:
        base = per_layer or [int(kv or 0)] * layers
        per_layer = [0 if rec[i] else base[i] for i in range(layers)]
    stateful = sum(1 for n in per_layer if n == 0)
    l_cache, d_conv = int(key("shortconv.l_cache", 0) or 0), int(key("ssm.conv_kernel", 0) or 0)
    if l_cache:
        state = hidden * (l_cache - 1)
    elif d_conv:
        inner, d_state, groups = (int(key(f"ssm.{k}", 0) or 0) for k in ("inner_size", "state_size", "group_count"))
        state = (d_conv - 1) * (inner + 2 * groups * d_state) + d_state * inner
    else:
        state = 0
    window = int(key("attention.sliding_window", 0) or 0)
    pattern = key("attention.sliding_window_pattern", None)
    swa = tuple(bool(x) for x in pattern) if window and pattern is not None and hasattr(pattern, "__len__") else ()
    if window and pattern is None and period > 1:      # llama.cpp's set_swa_pattern(period): il % period < period - 1
        swa = tuple(i % period < period - 1 for i in range(layers))
    return {"layer_kv_heads": tuple(per_layer), "sliding_window": window if any(swa) else 0, "swa_layers": swa,
            "recurrent_state_bytes": 4 * state * stateful}
