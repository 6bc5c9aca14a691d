"""Importance matrix from edgellm's calibration pass: for every 2-D weight, the mean squared activation of each
input column over the calibration tokens — the quantity llama.cpp's `llama-imatrix` collects, keyed by GGUF
tensor name, so llama.cpp's quantizer weighs each column's rounding error by how much it matters.

The pass runs the family's own block function (numpy ops, float weights, one layer at a time, as
converters/calibration.py does for GPTQ); a recording ops object sees each linear's input and adds x² per
column to every weight that multiplies it. Row permutations llama.cpp applies to Q/K do not touch columns, so
the vectors apply to the GGUF tensors as they are.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:   # numpy < 2
    byte_bounds = np.byte_bounds  # type: ignore[attr-defined]  # numpy 1.x spelling, gone from 2.x stubs

from ..errors import EdgeLLMError, QuantizationError
from .calibration import DEFAULT_SEQ_LEN, DEFAULT_TOKENS, Calibrator, CalibrationSet, calibration_set
from .families.numpy_ops import NumpyOps

log = logging.getLogger(__name__)


@dataclass
class ImportanceMatrix:
    """Per GGUF tensor name: sum of x² per input column (float64 [K]) and how many token rows were summed."""
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    seconds: float = 0.0

    def add(self, name: str, x: np.ndarray) -> None:
        """Accumulate the activations x [..., K] that multiply tensor `name`."""
        flat = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
        sq = np.einsum("ij,ij->j", flat, flat, dtype=np.float64)          # [K]
        if name in self.sums:
            if self.sums[name].shape != sq.shape:
                raise QuantizationError(f"importance matrix: {name} seen with {sq.shape[0]} and "
                                        f"{self.sums[name].shape[0]} input columns")
            self.sums[name] += sq
            self.counts[name] += flat.shape[0]
        else:
            self.sums[name], self.counts[name] = sq, flat.shape[0]

    def mean(self, name: str) -> np.ndarray:
        """Mean squared activation per input column, float32 [K] (what llama.cpp's quantizer receives)."""
        return (self.sums[name] / max(self.counts[name], 1)).astype(np.float32)

    @property
    def names(self) -> list[str]:
        return sorted(self.sums)

    def means(self) -> dict[str, np.ndarray]:
        return {n: self.mean(n) for n in self.names}


class _RecordingOps(NumpyOps):
    """Numpy ops that credit each linear's input to the GGUF tensors it multiplies (found by identity: the
    block function passes the layer's arrays, or slices of them when it splits a fused tensor)."""

    def __init__(self, layer: int, weights: dict[str, np.ndarray], matrix: ImportanceMatrix) -> None:
        super().__init__(None)
        self.matrix = matrix
        named = [(f"blk.{layer}.{role}", w) for role, w in weights.items() if np.ndim(w) == 2]
        self.named = named
        self.owner = {id(w): name for name, w in named}
        # a slice of a weight that is itself a view (a memory-mapped shard) has the shard as its .base, so
        # slices are also matched by the bytes they lie in
        self.spans = [(*byte_bounds(np.asarray(w)), name) for name, w in named]

    def _name(self, w: np.ndarray) -> str | None:
        a: Any = w
        while a is not None:
            if id(a) in self.owner:
                return self.owner[id(a)]
            a = getattr(a, "base", None)
        lo, hi = byte_bounds(np.asarray(w))
        inside = [name for start, end, name in self.spans if start <= lo and hi <= end]
        if len(inside) == 1:
            return inside[0]
        # a copy the block made from a tensor's rows (Qwen3.5's query/gate rows de-interleaved per head): the
        # tensor holding its first row (the input columns are the same, and so is the importance)
        arr = np.asarray(w)
        if arr.ndim != 2 or not arr.shape[0]:
            return None
        rows = [name for name, t in self.named if t.shape[1] == arr.shape[1]
                and bool(np.any(np.all(np.asarray(t) == arr[0], axis=1)))]
        return rows[0] if len(rows) == 1 else None

    def linear(self, x: np.ndarray, name: str, weights: list[np.ndarray],
               biases: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        self.record(x, name, weights)
        return super().linear(x, name, weights, biases)

    def record(self, x: np.ndarray, name: str, weights: list[np.ndarray]) -> None:
        """Add x's squared columns to every GGUF tensor among `weights` (once per tensor)."""
        seen: set[str] = set()
        for w in weights:
            gg = self._name(w)
            if gg is None:
                raise QuantizationError(f"importance matrix: a weight of {name} is not one of the layer's tensors",
                                        "the family's block function must pass the layer's arrays (or slices)")
            if gg not in seen:
                seen.add(gg)
                self.matrix.add(gg, x)


def compute_imatrix(model_dir: str | Path, calibration_text: str | Path | None = None,
                    tokens: int = DEFAULT_TOKENS, seq_len: int = DEFAULT_SEQ_LEN, *,
                    progress: bool = False, time_budget_s: float | None = None) -> ImportanceMatrix:
    """The importance matrix of an HF folder over the calibration text (edgellm's default mix when None).
    time_budget_s: whole sequences are dropped after a layer to meet it (each tensor's mean is over the tokens
    it saw)."""
    from tqdm import tqdm

    from .architectures import get_family
    from .families.weights import Weights
    from .onnx_stream import table_source
    from .hf import read_hf_model

    start = time.perf_counter()
    with read_hf_model(model_dir) as model:
        family = get_family(model.config.architecture)
        args = family.parse(model.config)
        seq = min(seq_len, int(args.max_positions or seq_len))
        calib: CalibrationSet = dataclasses.replace(
            calibration_set(Path(model_dir), calibration_text, tokens, seq_len=seq), time_budget_s=time_budget_s)
        weights = Weights(model, family, args)
        matrix = ImportanceMatrix(datasets=[calib.source], chunk_count=int(calib.ids.shape[0]),
                                  chunk_size=int(calib.ids.shape[1]))
        embed = table_source(model, weights, "token_embd.weight")
        run = Calibrator(family, args, calib, quantize=lambda *_: None)
        run.embed(embed, family.embed_scale(args))
        weights.release("token_embd.weight")
        for i in tqdm(range(args.layers), desc="importance matrix", unit="layer", disable=not progress,
                      leave=False):
            w = weights.layer(i)
            run.layer(i, w, ops=_RecordingOps(i, w, matrix))
            weights.release_layer(i)                     # the layer's mapped pages leave the resident set
        head = "token_embd.weight" if args.tied or weights.get("output.weight") is None else "output.weight"
        matrix.add(head, run.final_input(np.asarray(weights.need(family.final_norm), np.float32)))
    matrix.seconds = time.perf_counter() - start
    log.info("importance matrix: %d tensors over %d tokens in %.1f s", len(matrix.sums), calib.tokens,
             matrix.seconds)
    return matrix


def unpacked_from_gguf(model_dir: str | Path) -> str | None:
    """The GGUF file name a folder was unpacked from (`edgellm unpack` records it in the safetensors metadata as
    "source"), or None. Such weights already lie on a quantized grid: requantizing them without an importance matrix
    lands back on that grid, while a matrix would move them off it."""
    from .safetensors_io import read_header

    shards = sorted(Path(model_dir).glob("*.safetensors"))
    if not shards:
        return None
    try:
        _, meta = read_header(shards[0])
    except (OSError, EdgeLLMError):   # a bad shard is reported by the converter itself, with its own error
        return None
    source = meta.get("source", "")
    return source if source.lower().endswith(".gguf") else None


def resolve_imatrix(model_dir: str | Path, imatrix: bool | str | Path | None) -> bool | str | Path:
    """None means automatic: an importance matrix for every folder except one unpacked from a GGUF."""
    if imatrix is None:
        return unpacked_from_gguf(model_dir) is None
    return imatrix


def require_imatrix(quant: Any, imatrix: bool | str | Path | None) -> None:
    """Refuse, before any work, a type that cannot be made without an importance matrix when none is allowed."""
    if getattr(quant, "needs_imatrix", False) and (imatrix is False or imatrix is None):
        raise QuantizationError(f"{quant.name} needs an importance matrix and imatrix is disabled",
                                "pass --imatrix on (imatrix=True) and edgellm computes one from its calibration "
                                "text, or --imatrix FILE with a llama.cpp .imatrix file")


def prepare_imatrix(model_dir: str | Path, quant: Any, imatrix: bool | str | Path | None, save_to: Path | None, *,
                    calibration_text: str | Path | None = None, tokens: int = DEFAULT_TOKENS,
                    progress: bool = False, time_budget_s: float | None = None) -> ImportanceMatrix | None:
    """The importance matrix a llama.cpp-quantized type gets: computed from the calibration text (True), read
    from a `.imatrix` file (a path), or none (False, or a type that ignores it). Saved as a GGUF imatrix file
    at `save_to` (llama-quantize --imatrix reads it) when given."""
    require_imatrix(quant, imatrix)
    if imatrix is False or imatrix is None or not getattr(quant, "uses_imatrix", False):
        return None
    if imatrix is True:
        matrix = compute_imatrix(model_dir, calibration_text, tokens, progress=progress, time_budget_s=time_budget_s)
    else:
        from .imatrix_file import read_imatrix

        matrix = read_imatrix(imatrix)
    if save_to is not None:
        from .imatrix_file import write_imatrix

        write_imatrix(matrix, save_to)
    return matrix
