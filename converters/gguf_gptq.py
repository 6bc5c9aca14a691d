"""GPTQ rounding written into llama.cpp's own block layouts.

llama.cpp's quantizer picks each block's header (d, dmin, sub-block scales) with its importance-weighted search
and then rounds every weight to the nearest level. Here the headers are kept exactly as llama.cpp picks them
(`ggml_quantize_chunk` with the importance vector = the diagonal of the layer input's Hessian), and only the
codes are chosen again, column by column, with GPTQ's error feedback (Frantar et al., 2022; act order by
Hessian diagonal, "static groups"): the output error ||X W^T - X Q^T|| drops while the file keeps the block
type, the size and the kernels of llama.cpp's own file.

The Hessians come from a sequential calibration pass (converters/calibration.Calibrator running the family's
block in numpy): layer i's inputs come from layers < i as quantized. Each linear input is credited to its GGUF
tensor by array identity (imatrix._RecordingOps), so q/k/v share one Hessian and gate/up another. llama.cpp's
Q/K row permutation moves whole rows, so the rows are permuted before encoding and GPTQ per row is unaffected.
"""
from __future__ import annotations

import dataclasses
import logging
import mmap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import QuantizationError
from .calibration import DEFAULT_SEQ_LEN, DEFAULT_TOKENS, Calibrator, calibration_set
from .families.numpy_ops import NumpyOps, hessian
from .ggml_quantize import ggml_quantize
from .gguf_blocks import LAYOUTS, Blocks, nearest_codes, pack, parse
from .gguf_mix import candidates, check_mix
from .gptq import Prepared, column_loop, prepare
from .imatrix import ImportanceMatrix, _RecordingOps

log = logging.getLogger(__name__)

LAZY = 128                      # columns updated together before the rest of the matrix is touched
REFIT_ROUNDS = 0                # default rounds of scale refit + GPTQ again (REFIT_TYPES; see encode_gptq)
SUPPORTED: tuple[str, ...] = tuple(LAYOUTS)


@dataclass
class Encoded:
    """One tensor in its final block type: raw bytes [rows, row_bytes] in GGUF row order."""
    type: str
    raw: np.ndarray
    error_rtn: float = 0.0      # relative output error tr(E H E^T) / tr(W H W^T) with llama.cpp's own codes
    error_gptq: float = 0.0     # the same with GPTQ's codes


def grid_gptq(w: np.ndarray, blocks: Blocks, prepared: Prepared, lazy: int = LAZY) -> np.ndarray:
    """Codes [N, K] for float weights w [N, K] on the fixed grid of `blocks` (headers kept), chosen column by
    column in `prepared`'s order with GPTQ error feedback through its inverse-Hessian factor."""
    lay = blocks.layout
    n, k = w.shape
    nearest = nearest_codes(lay)
    levels = lay.levels
    dead, perm, u = prepared.dead, prepared.perm, prepared.u
    weights = np.array(w, dtype=np.float32)
    weights[:, dead] = 0.0
    wt = np.ascontiguousarray(weights[:, perm].T)                    # [K, N], visiting order
    s_t = np.ascontiguousarray(blocks.scale.T)                       # [groups, N]
    o_t = np.ascontiguousarray(blocks.offset.T)
    inv_t = np.divide(1.0, s_t, out=np.zeros_like(s_t), where=s_t != 0)
    codes_t = np.zeros((k, n), np.uint8)

    def column(j: int, x: np.ndarray, ahead: np.ndarray) -> np.ndarray:
        g = j // lay.group
        c = nearest((x - o_t[g]) * inv_t[g])
        codes_t[j] = c
        return s_t[g] * levels[c] + o_t[g]

    column_loop(wt, perm, u, column, lazy=lazy)
    return np.ascontiguousarray(codes_t.T)


REFIT_TYPES = ("Q4_0", "Q5_0", "Q8_0", "IQ4_NL")   # one float16 scale at byte 0 of a 32-element block, no offset
REFIT_DAMP = 0.01          # fraction of the mean Hessian diagonal added before the scale fit
_REFIT_ROWS = 256          # rows fitted together (temporaries: rows x K x blocks floats)


def refit_scales(w: np.ndarray, blocks: Blocks, codes: np.ndarray, h: np.ndarray) -> Blocks:
    """The same codes with new block scales: per row, the scales d minimising (w - A d)^T H (w - A d), A holding
    each block's levels in its columns (a small least-squares solve per row). Types with one float16 scale at
    the start of each block only (REFIT_TYPES); a block whose fit is singular keeps its scale."""
    lay = blocks.layout
    if lay.name not in REFIT_TYPES:
        raise QuantizationError(f"scale refit is not implemented for {lay.name}")
    n, k = w.shape
    g, size = k // lay.group, lay.group
    hd = np.array(h, np.float64)
    hd[np.diag_indices(k)] += REFIT_DAMP * (float(np.mean(np.diag(hd))) or 1.0)
    hg = hd.reshape(k, g, size)
    raw = blocks.raw.reshape(n, g, lay.nbytes).copy()
    for r0 in range(0, n, _REFIT_ROWS):
        r1 = min(r0 + _REFIT_ROWS, n)
        lev = lay.levels[codes[r0:r1]].reshape(r1 - r0, g, size).astype(np.float64)
        m = np.einsum("kgj,ngj->nkg", hg, lev).reshape(r1 - r0, g, size, g)         # H[:, block] @ levels
        ata = np.einsum("ngi,ngih->ngh", lev, m)                                     # [rows, g, g]
        atw = np.einsum("ngi,ngi->ng", lev, (w[r0:r1].astype(np.float64) @ hd).reshape(r1 - r0, g, size))
        ridge = 1e-9 * (np.abs(np.diagonal(ata, axis1=1, axis2=2)).max(axis=1) + 1e-30)
        d = np.linalg.solve(ata + ridge[:, None, None] * np.eye(g), atw[..., None])[..., 0]
        ok = np.isfinite(d) & (np.abs(d) < 65000) & (np.diagonal(ata, axis1=1, axis2=2) > 0)
        old = blocks.scale[r0:r1]
        raw[r0:r1, :, 0:2] = np.where(ok, d, old).astype(np.float16).view(np.uint8).reshape(r1 - r0, g, 2)
    return parse(lay.name, raw.reshape(n, -1))


def _output_error(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> float:
    """tr(E H E^T) / tr(W H W^T), E = q - w: the output error relative to the output (float32 products)."""
    h32 = np.asarray(h, np.float32)
    w32 = np.asarray(w, np.float32)
    e = np.asarray(q, np.float32) - w32
    ref = float(np.einsum("ij,ij->", w32 @ h32, w32, dtype=np.float64)) or 1.0
    return float(np.einsum("ij,ij->", e @ h32, e, dtype=np.float64)) / ref


def encode_best(w: np.ndarray, types: tuple[str, ...], h: np.ndarray, *, prepared: Prepared | None = None,
                measure: bool = False, refit: int = 0) -> tuple[Encoded, np.ndarray]:
    """encode_gptq for each of `types` (same-size candidates, gguf_mix.candidates); the one with the smallest
    output error tr(E H E^T) is returned (the first on a tie). One type: no error is computed unless `measure`."""
    best: tuple[float, Encoded, np.ndarray] | None = None
    for t in types:
        enc, values = encode_gptq(w, t, h, prepared=prepared, measure=measure, refit=refit)
        if len(types) == 1:
            return enc, values
        err = enc.error_gptq if measure else _output_error(w, values, h)
        if best is None or err < best[0]:
            best = (err, enc, values)
    if best is None:
        raise QuantizationError("encode_best needs at least one candidate type")
    return best[1], best[2]


def encode_gptq(w: np.ndarray, ggml_type: str, h: np.ndarray, *, prepared: Prepared | None = None,
                importance: np.ndarray | None = None, measure: bool = False,
                refit: int = 0) -> tuple[Encoded, np.ndarray]:
    """Float weights w [N, K] (GGUF row order) -> (the `ggml_type` tensor with llama.cpp's headers and GPTQ's
    codes, its dequantized values float32 [N, K]). h: the input's Hessian X^T X / tokens [K, K].
    refit: rounds of (fit the block scales to GPTQ's codes, GPTQ again on the new scales), for REFIT_TYPES."""
    imp = np.diag(h).astype(np.float32) if importance is None else importance
    rtn = blocks = parse(ggml_type, ggml_quantize(w, ggml_type, np.maximum(imp, 1e-12)))
    p = prepared if prepared is not None else prepare(h, True)
    codes = grid_gptq(w, blocks, p)
    for _ in range(refit if ggml_type in REFIT_TYPES else 0):
        blocks = refit_scales(w, blocks, codes, h)
        codes = grid_gptq(w, blocks, p)
    values = blocks.values(codes)
    enc = Encoded(ggml_type, pack(blocks, codes))
    if measure:
        enc.error_rtn, enc.error_gptq = _output_error(w, rtn.values(), h), _output_error(w, values, h)
    return enc, values


def drop_pages(raw: np.ndarray) -> None:
    """For a spilled encoding (an np.memmap of its file): drop its pages from this process's resident set (they
    stay in the page cache; reading again maps them back). Anything else is left alone."""
    mm = getattr(raw, "_mmap", None)
    if isinstance(raw, np.memmap) and mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def _whole(w: np.ndarray, full: np.ndarray) -> bool:
    """w is the layer's tensor itself (or a view of all of it in the same order), not a slice or a reordered copy:
    only then do its rows map one to one onto the GGUF tensor's."""
    if w is full:
        return True
    a, b = np.asarray(w), np.asarray(full)
    return bool(a.shape == b.shape and a.strides == b.strides
                and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


class _GPTQOps(_RecordingOps):
    """Records the importance matrix (as imatrix does) and encodes every whole weight whose planned type has a
    layout with GPTQ against its input's Hessian; the block then computes with the encoded values."""

    def __init__(self, layer: int, weights: dict[str, np.ndarray], matrix: ImportanceMatrix,
                 targets: Mapping[str, str], row_perm: Mapping[str, np.ndarray], out: dict[str, Encoded],
                 measure: bool, refit: int, credit: Callable[[float, int], None], mix: str = "off",
                 spill: Path | None = None) -> None:
        super().__init__(layer, weights, matrix)
        self.targets, self.row_perm, self.out, self.measure, self.refit = targets, row_perm, out, measure, refit
        self.mix, self.spill = mix, spill
        self.credit = credit            # Calibrator.credit: encoding time is not per-token work (time budget)

    def linear(self, x: np.ndarray, name: str, weights: list[np.ndarray],
               biases: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        h: np.ndarray | None = None
        prepared: Prepared | None = None
        used: list[np.ndarray] = []
        for w in weights:
            gg = self._name(w)
            full = next((t for n, t in self.named if n == gg), None)
            if gg is None or gg not in self.targets or full is None or not _whole(w, full) or gg in self.out:
                used.append(w)
                continue
            t0 = time.perf_counter()
            if h is None:
                h = hessian(x)
                prepared = prepare(h, True)
            rows = self.row_perm.get(gg)
            wf = np.asarray(w, np.float32)
            wg = wf if rows is None else wf[rows]
            enc, values = encode_best(wg, candidates(self.targets[gg], wg.shape[1], self.mix), h,
                                      prepared=prepared, measure=self.measure, refit=self.refit)
            self.credit(time.perf_counter() - t0, int(wf.size))
            if self.spill is not None:          # to disk: the pass holds none of the encoded model in memory
                path = self.spill / f"{gg}.bin"
                enc.raw.tofile(path)
                enc.raw = np.memmap(path, dtype=np.uint8, mode="r", shape=enc.raw.shape)
            self.out[gg] = enc
            if rows is not None:
                back = np.empty_like(values)
                back[rows] = values
                values = back
            used.append(values)
        self.record(x, name, weights)           # the importance of every tensor (identity match)
        return NumpyOps.linear(self, x, name, used, biases)


@dataclass
class GPTQResult:
    tensors: dict[str, Encoded] = field(default_factory=dict)   # GGUF name (with ".weight") -> encoded tensor
    matrix: ImportanceMatrix = field(default_factory=ImportanceMatrix)
    seconds: float = 0.0
    calibration: dict[str, Any] = field(default_factory=dict)   # text, tokens, budget and what the pass used
    planned: dict[str, str] = field(default_factory=dict)       # the types asked for (a mix may choose others)


def _row_perms(weights: Any, args: Any) -> dict[str, np.ndarray]:
    from .families.base import permute_qk

    out = {}
    for gg, (_hf, rule) in weights.rules.items():
        if rule.permute is not None:
            heads = args.heads if rule.permute == "q" else args.kv_heads
            out[gg] = permute_qk(np.arange(tuple(rule.shape(args))[0]), heads)
    return out


def calibrate_gptq(model_dir: str | Path, types: Mapping[str, str], calibration_text: str | Path | None = None,
                   tokens: int | None = None, seq_len: int = DEFAULT_SEQ_LEN, *, progress: bool = False,
                   measure: bool = False, refit: int | None = None,
                   time_budget_s: float | None = None, mix: str = "off",
                   spill: Path | None = None) -> GPTQResult:
    """One sequential calibration pass over an HF folder: GPTQ-encode every tensor whose planned GGML type
    (`types`: GGUF name -> type, e.g. from quant_plan) has a block layout, and collect the importance matrix of
    all of them (llama.cpp quantizes the rest with it). time_budget_s: a budget for the pass (Calibrator.fit_budget
    drops whole calibration sequences after each layer to meet it; the result's `calibration` says what was used).
    mix: "fast" / "size" let each tensor take the same-size type with the smallest measured output error
    (converters/gguf_mix.py); the encoded tensors' `type` says which. spill: a folder the encoded bytes are written
    to as they are made (each Encoded.raw is then a read-only memory map of its file; the caller removes the folder
    once the GGUF is written), so the pass's memory does not grow with the model."""
    from tqdm import tqdm

    from .architectures import get_family
    from .families.weights import Weights
    from .onnx_stream import table_source
    from .hf import read_hf_model

    start = time.perf_counter()
    result = GPTQResult(planned=dict(types))
    with read_hf_model(model_dir) as model:
        family = get_family(model.config.architecture)
        args = family.parse(model.config)
        seq = min(seq_len, int(args.max_positions or seq_len))
        calib = calibration_set(Path(model_dir), calibration_text, tokens or DEFAULT_TOKENS, seq_len=seq)
        calib = dataclasses.replace(calib, time_budget_s=time_budget_s)
        weights = Weights(model, family, args)
        result.matrix = ImportanceMatrix(datasets=[calib.source], chunk_count=int(calib.ids.shape[0]),
                                         chunk_size=int(calib.ids.shape[1]))
        perms = _row_perms(weights, args)
        run = Calibrator(family, args, calib, quantize=lambda *_: None)
        run.embed(table_source(model, weights, "token_embd.weight"), family.embed_scale(args))
        weights.release("token_embd.weight")   # a pass over a 3B checkpoint otherwise keeps all 6 GB of it mapped
        out: dict[str, Encoded] = {}
        for i in tqdm(range(args.layers), desc="GPTQ (GGUF blocks)", unit="layer", disable=not progress,
                      leave=False):
            w = weights.layer(i)
            targets = {f"blk.{i}.{role}": types[f"blk.{i}.{role}"] for role in w
                       if types.get(f"blk.{i}.{role}") in LAYOUTS}
            run.layer(i, w, ops=_GPTQOps(i, w, result.matrix, targets, perms, out, measure,
                                         REFIT_ROUNDS if refit is None else refit, run.credit, check_mix(mix),
                                         spill))
            weights.release_layer(i)
        head = "token_embd.weight" if args.tied or weights.get("output.weight") is None else "output.weight"
        result.matrix.add(head, run.final_input(np.asarray(weights.need(family.final_norm), np.float32)))
    result.tensors = out     # may be empty (no planned type has a layout): llama.cpp then rounds everything
    result.seconds = time.perf_counter() - start
    result.calibration = {"source": calib.source, "tokens": calib.tokens, "time_budget_s": time_budget_s,
                          **calib.log.summary()}
    log.info("GPTQ (GGUF blocks): %d tensors in %.1f s", len(out), result.seconds)
    return result
