"""The memory an ONNX conversion needs, planned from the tensor sizes before anything is written, and the
`max_memory` budget it is checked against (an int of bytes or a string such as "4GiB", "1.5GB", "800MiB").

The converter streams (onnx_stream.py), so the peak is: the interpreter with numpy/onnx loaded, one decoder
layer held as float32 (plus its mapped pages and the fused q|k|v or gate|up copy), the quantization slices in
flight (one per thread), the scales of the largest quantized table, and for GPTQ the calibration activations,
Hessians and the per-thread GPTQ work arrays. The constants were fitted on Llama-shaped 135M/1B checkpoints
(tests/benchmarks/bench_scaling.py); the estimate errs high.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConversionError
from . import onnx_stream
from .quant import Recipe

BASE_BYTES = 120 << 20          # python + numpy + onnx + tokenizers imported (~100 MB measured), the graph proto
SLICE_FACTOR = 16               # quantize_blocks' temporaries per float32 element of a slice (MSE search: ~16x)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 1 << 10, "m": 10**6, "mb": 10**6, "mib": 1 << 20,
          "g": 10**9, "gb": 10**9, "gib": 1 << 30, "t": 10**12, "tb": 10**12, "tib": 1 << 40}


def parse_bytes(value: int | str) -> int:
    """4294967296, "4GiB", "4 GB", "512MiB" -> bytes."""
    if isinstance(value, bool):
        raise ConversionError(f"max_memory={value!r} is not a size", 'pass bytes or a string such as "4GiB"')
    if isinstance(value, int):
        n = value
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in _UNITS:
            raise ConversionError(f"max_memory={value!r} is not a size", 'pass bytes or a string such as "4GiB"')
        n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ConversionError(f"max_memory={value!r} must be positive", 'pass a size such as "4GiB"')
    return n


@dataclass
class MemoryPlan:
    parts: dict[str, int] = field(default_factory=dict)
    threads: int = 1

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        return ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in self.parts.items() if v)


def plan_memory(config: Any, infos: dict[str, Any], recipe: Recipe, threads: int,
                calib_tokens: int = 0) -> MemoryPlan:
    """Peak resident bytes of convert_to_onnx for this model (config: ModelConfig; infos: name -> TensorInfo)."""
    d, ffn, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    layer0 = [i for n, i in infos.items() if ".layers.0." in n]
    layer_f32 = sum(4 * i.n_elements for i in layer0)
    layer_mapped = sum(i.nbytes for i in layer0)
    attn_rows = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
    fused_copy = 4 * max(attn_rows * d, 2 * ffn * d)                 # q|k|v or gate|up concatenated
    big = [recipe.spec_for("embeddings"), recipe.spec_for("lm_head")]
    table_meta = sum(2 * vocab * (d // s.block_size) * 5 for s in big if s.bits)   # scales + zeros, list + concat
    head = recipe.spec_for("lm_head")
    transpose = 0 if head.bits else onnx_stream.TRANSPOSE_ROWS * d * 10  # one transposed slice: f32 + cast + .T
    specs = (recipe.weight, head, *(spec for _, spec in recipe.overrides))
    factor = SLICE_FACTOR if any(s.method != "rtn" for s in specs if s.bits) else SLICE_FACTOR // 2
    slice_bytes = 4 * onnx_stream.CHUNK_ELEMENTS * factor * (threads + 1)
    plan = MemoryPlan({"base": BASE_BYTES, "layer": layer_f32 + layer_mapped + fused_copy,
                       "slices": slice_bytes, "tables": table_meta + transpose}, threads)
    if recipe.calibrated:
        cal = calibration_parts(d, ffn, fused_copy, calib_tokens)
        plan.parts.update(cal)
        # quantization slices (the tables, before and after the layers) never coincide with the GPTQ peak
        plan.parts["slices"] = max(0, slice_bytes - sum(cal.values()))
    return plan


def calibration_parts(d: int, ffn: int, fused_copy: int, tokens: int) -> dict[str, int]:
    """What a sequential GPTQ calibration pass adds at its peak (ONNX int4 and GGUF GPTQ rounding alike)."""
    acts = tokens * (8 * d + 4 * ffn) * 4                        # hidden states + one block's intermediates
    # the widest Hessian (the MLP down projection's, float32) lives twice at the peak: X^T X, and its permuted
    # copy that the blocked Cholesky and triangular inverse overwrite in place (gptq.py); U is counted below
    hess = 2 * 4 * (max(d, ffn) ** 2)
    gptq = 3 * fused_copy + 4 * max(d, ffn) ** 2                # weights, codes, updated copy per layer; U
    return {"calibration": acts, "hessians": hess, "gptq": gptq}


def refuse(what: str, plan: MemoryPlan, budget: int, hint: str) -> ConversionError:
    return ConversionError(f"converting to {what} needs about {plan.total / 2**30:.2f} GiB ({plan.describe()}) "
                           f"but max_memory is {budget / 2**30:.2f} GiB", hint)


def check_budget(config: Any, infos: dict[str, Any], recipe: Recipe, threads: int, calib_tokens: int,
                 max_memory: int | str | None) -> MemoryPlan:
    """The plan for the most threads (<= `threads`) that fits `max_memory`; ConversionError with the numbers
    when even one thread does not."""
    plan = plan_memory(config, infos, recipe, threads, calib_tokens)
    if max_memory is None:
        return plan
    budget = parse_bytes(max_memory)
    for t in range(threads, 0, -1):
        plan = plan_memory(config, infos, recipe, t, calib_tokens)
        if plan.total <= budget:
            return plan
    raise refuse(f"ONNX {recipe.name} with 1 thread", plan, budget,
                 "raise max_memory" + (", lower --calibration-tokens, or use int4-rtn (no calibration)"
                                       if recipe.calibrated else ""))
