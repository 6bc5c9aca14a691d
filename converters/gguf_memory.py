"""The memory a GGUF conversion needs, planned from the tensor sizes before anything is written, and checked
against `max_memory` (like ONNX's, converters/onnx_memory.py; the same size strings).

A GGUF conversion runs in stages, so its peak is the largest stage's:
- writing (edgellm's own types, or the intermediate llama.cpp quantizes from): one tensor at a time, its mapped
  source pages and its encoded bytes (measured at 1B and 3B: base + largest source + largest output, within 3 %);
- the calibration pass (importance matrix, GPTQ rounding): one decoder layer in float32, the activations and,
  for GPTQ, the Hessians and work arrays (onnx_memory.calibration_parts; the encoded tensors go to disk);
- llama.cpp's quantizer: it converts each tensor to float32 and quantizes it with per-thread work buffers; fitted
  at 1.65 x the largest tensor in float32 (1B Q4_K_M 1.89 GB, 3B 2.79 GB measured peaks, both 1.63-1.65); after a
  calibration pass in the same process, plus about one float32 layer (3B Q4_K_M with GPTQ rounding: 3.17 GB).
"""
from __future__ import annotations

from typing import Any

from .gguf_types import GGUFQuant, tensor_nbytes
from .onnx_memory import BASE_BYTES, MemoryPlan, calibration_parts, parse_bytes, refuse

LLAMA_BASE_BYTES = BASE_BYTES + (60 << 20)     # + llama.cpp's library and gguf-py
QUANTIZER_F32_FACTOR = 1.65                    # llama.cpp quantize peak per float32 byte of the largest tensor


def plan_gguf_memory(config: Any, infos: dict[str, Any], q: GGUFQuant, method: str, calib_tokens: int) -> MemoryPlan:
    """Peak resident bytes of convert_to_gguf (config: ModelConfig; infos: name -> TensorInfo; method: "native",
    "llama" or "gptq"; calib_tokens: 0 without a calibration pass). The parts of the largest stage."""
    largest = max(infos.values(), key=lambda i: i.n_elements)
    write_type = q.main_type if q.native else "F32" if largest.dtype == "F32" else "F16"
    out_bytes = tensor_nbytes(write_type, tuple(int(x) for x in largest.shape))
    stages = [MemoryPlan({"base": LLAMA_BASE_BYTES, "largest tensor (mapped)": largest.nbytes,
                          "largest tensor (written)": out_bytes})]
    if calib_tokens:
        d, ffn = config.hidden_size, config.intermediate_size
        layer0 = [i for n, i in infos.items() if ".layers.0." in n]
        attn_rows = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
        fused_copy = 4 * max(attn_rows * d, 2 * ffn * d)
        parts = {"base": LLAMA_BASE_BYTES, "layer": sum(4 * i.n_elements + i.nbytes for i in layer0)}
        cal = calibration_parts(d, ffn, fused_copy, calib_tokens)
        if method != "gptq":            # the importance matrix alone: activations, no Hessians
            cal = {"calibration": cal["calibration"]}
        stages.append(MemoryPlan({**parts, **cal}))
    if not q.native:
        quantizer = MemoryPlan({"base": LLAMA_BASE_BYTES,
                                "llama.cpp quantizer": int(QUANTIZER_F32_FACTOR * 4 * largest.n_elements)})
        if calib_tokens:        # the pass ran in this process first: about one float32 layer of it stays resident
            quantizer.parts["after calibration"] = sum(4 * i.n_elements for n, i in infos.items() if ".layers.0." in n)
        stages.append(quantizer)
    return max(stages, key=lambda p: p.total)


def check_gguf_budget(config: Any, infos: dict[str, Any], q: GGUFQuant, method: str, calib_tokens: int,
                      max_memory: int | str | None) -> MemoryPlan:
    """The plan; ConversionError with the numbers when it exceeds `max_memory`."""
    plan = plan_gguf_memory(config, infos, q, method, calib_tokens)
    if max_memory is None:
        return plan
    budget = parse_bytes(max_memory)
    if plan.total > budget:
        hint = "raise max_memory"
        if "hessians" in plan.parts or "calibration" in plan.parts:
            hint += ", lower --calibration-tokens, or pass --imatrix off"
        if "llama.cpp quantizer" in plan.parts:
            hint += ", or pick a type edgellm writes itself (Q8_0, F16, BF16)"
        raise refuse(f"GGUF {q.name}", plan, budget, hint)
    return plan
