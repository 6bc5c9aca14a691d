"""Same-size block types a GPTQ-rounded GGUF tensor may take instead of its recipe's type ("mix").

A recipe gives each tensor a GGML type (llama.cpp's choice for the quant). Several types spend exactly the same
bits per weight with different grids: Q4_0, IQ4_NL and Q4_K are all 4.5 bits, Q5_0 and Q5_K 5.5. Which grid
fits a tensor best depends on its weights and its inputs, so the calibration pass measures it: every candidate is
GPTQ-encoded against the tensor's input Hessian and the one with the smallest output error tr(E H E^T) is kept
(the same measure GPTQ minimises; comparing grids on one tensor with one H needs no weighting across tensors).
The file keeps the recipe's size to the byte; its kernels change only where a candidate was picked.

Modes (`mix`):
- "off" (the default): the recipe's types only (llama.cpp's own file layout; a Q4_0 file holds Q4_0 tensors,
  whose repacked Arm kernels are the reason many pick it).
- "fast": candidates whose llama.cpp CPU kernels were measured at least as fast as the recipe type's
  (tests/benchmarks/bench_gguf_gptq.py --speed; Q4_K for Q4_0 rows of 256-multiples: 1.06x prefill, 1.02x
  decode on AVX-512).
- "size": every same-size candidate (IQ4_NL too: about 7% slower decode than Q4_0 on x86 without repacking).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from ..errors import QuantizationError
from .gguf_blocks import LAYOUTS

Mix = Literal["off", "fast", "size"]
MIXES: tuple[str, ...] = ("off", "fast", "size")
DEFAULT_MIX: Mix = "off"


@dataclass(frozen=True)
class Alternative:
    type: str
    fast: bool          # kernels measured not slower than the recipe type's


# recipe type -> same bits-per-weight types with a GPTQ block layout (gguf_blocks.LAYOUTS). `fast` only where
# measured (SmolLM2, 2 threads, AVX-512 with llama.cpp's repacking off; ratios vs the recipe type's file):
# Q4_K for Q4_0's ffn_down 1.06x prefill / 1.02x decode, IQ4_NL everywhere 0.94x / 0.93x. Q5_K vs Q5_0 and
# every Arm kernel are unmeasured, hence not `fast`.
SAME_SIZE: dict[str, tuple[Alternative, ...]] = {
    "Q4_0": (Alternative("Q4_K", True), Alternative("IQ4_NL", False)),        # 4.5 bits
    "IQ4_NL": (Alternative("Q4_K", True), Alternative("Q4_0", True)),
    "Q4_K": (Alternative("Q4_0", False), Alternative("IQ4_NL", False)),
    "Q5_0": (Alternative("Q5_K", False),),                                     # 5.5 bits
    "Q5_K": (Alternative("Q5_0", False),),
}


def check_mix(mix: str) -> Mix:
    if mix not in MIXES:
        raise QuantizationError(f"unknown mix {mix!r}", f"use one of {', '.join(MIXES)}")
    return cast(Mix, mix)


def candidates(recipe_type: str, ncols: int, mix: str) -> tuple[str, ...]:
    """The types a tensor of `ncols` input columns planned as `recipe_type` may take under `mix`, the recipe's
    own first; only types whose block divides the row."""
    out = [recipe_type]
    if check_mix(mix) == "off":
        return tuple(out)
    for alt in SAME_SIZE.get(recipe_type, ()):
        if (alt.fast or mix == "size") and ncols % LAYOUTS[alt.type].block == 0:
            out.append(alt.type)
    return tuple(out)
