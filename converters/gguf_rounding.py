"""The GPTQ rounding stage of a GGUF conversion: which rounding a quant gets, the calibration pass (with the
recipe's types, the caller's overrides and the same-size mix), the encoded tensors that fit the file, the
importance matrix llama.cpp quantizes the rest with, and the manifest's record of it all."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Literal, Mapping

from ..errors import QuantizationError
from .families.base import TensorRule
from .gguf_gptq import Encoded, GPTQResult, calibrate_gptq
from .gguf_types import GGUFQuant, tensor_nbytes
from .imatrix import ImportanceMatrix

log = logging.getLogger(__name__)

Plan = list[tuple[str, str, tuple[int, ...], TensorRule]]   # (HF name, GGUF name, numpy shape, rule)

Rounding = Literal["gptq", "llama"]


def resolve_rounding(q: GGUFQuant, imatrix: bool | str | Path | None, rounding: str | None) -> str:
    """"gptq" or "llama" for quant `q` (native types are edgellm's own round-to-nearest: "native")."""
    if rounding not in (None, "gptq", "llama"):
        raise QuantizationError(f"unknown rounding {rounding!r}", "use 'gptq', 'llama' or None (automatic)")
    if q.native:
        return "native"
    if rounding is None:
        return "gptq" if imatrix is True else "llama"
    if rounding == "gptq" and (imatrix is False or imatrix is None):
        raise QuantizationError("rounding='gptq' needs the calibration pass, and imatrix is disabled",
                                "pass imatrix=True (--imatrix on) or rounding='llama'")
    return rounding


def calibrate(model_dir: str | Path, q: GGUFQuant, calibration_text: str | Path | None,
               tokens: int | None, tensor_types: Mapping[str, str] | None, budget: float | None,
               mix: str, spill: Path | None = None) -> GPTQResult:
    """The GPTQ pass over the recipe's types with the caller's overrides; with a mix, a tensor may come back in
    another same-size type (its Encoded.type), which pinned_types hands to llama.cpp's quantizer."""
    from .quant_plan import gguf_layout

    types = {t.name: t.type for t in gguf_layout(model_dir).types(q.name, imatrix=True)}
    return calibrate_gptq(model_dir, {**types, **(tensor_types or {})}, calibration_text, tokens,
                          time_budget_s=budget, mix=mix, spill=spill)


def pinned_types(tensor_types: Mapping[str, str] | None, gptq: GPTQResult | None) -> dict[str, str]:
    """The per-tensor types llama.cpp's quantizer must be told: the caller's overrides, and each GPTQ-encoded
    tensor the mix moved to another type than planned (the intermediate holds it in that type, so llama.cpp copies
    its bytes). Tensors in their planned type are left to llama.cpp's own rules, which pick the same type and
    report their fallbacks."""
    moved = {gg: e.type for gg, e in gptq.tensors.items() if e.type != gptq.planned.get(gg)} if gptq else {}
    return {**(tensor_types or {}), **moved}


def fitting(encoded: dict[str, Encoded], plan: Plan) -> dict[str, Encoded]:
    """The encoded tensors whose bytes fit their GGUF tensor's shape (others are left to llama.cpp's rounding)."""
    out = {}
    for _hf, gg, shape, _rule in plan:
        e = encoded.get(gg)
        if e is None:
            continue
        if len(shape) == 2 and e.raw.shape[0] == shape[0] and e.raw.nbytes == tensor_nbytes(e.type, shape):
            out[gg] = e
        else:
            log.warning("%s: the GPTQ encoding does not fit the GGUF shape %s; llama.cpp rounds it", gg, shape)
    return out


def gptq_imatrix(gptq: GPTQResult, imatrix: bool | str | Path, save_to: Path) -> ImportanceMatrix:
    """The importance matrix llama.cpp quantizes the other tensors with: the GPTQ pass's own, or a given file."""
    from .imatrix_file import read_imatrix, write_imatrix

    matrix = gptq.matrix if isinstance(imatrix, bool) else read_imatrix(imatrix)
    write_imatrix(matrix, save_to)
    return matrix


def rounding_record(method: str, gptq: GPTQResult | None, mix: str) -> dict[str, Any]:
    if gptq is None:
        return {"method": method}
    return {"method": method, "mix": mix, "tensors": dict(Counter(e.type for e in gptq.tensors.values())),
            "seconds": round(gptq.seconds, 1), "calibration": gptq.calibration}
