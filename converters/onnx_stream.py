"""The streaming half of the ONNX converter: weights read in row slices, quantized by a thread pool, written
into reserved regions of the external data file, so peak memory is a layer plus a few slices, not the model.

- `Source`: an [N, K] weight as float32 row slices, from a memory-mapped tensor (each slice's pages are dropped
  from the resident set once used) or from an array already in memory.
- `store_nbits_streamed` / `store_float_streamed`: MatMulNBits triples and float tables written slice by slice.
  Block quantization works per row, so the bytes are the ones whole-tensor quantization writes.
- `map_ordered`: a thread pool's results in input order with a bounded number in flight (numpy releases the GIL
  in the large element-wise ops, so int4 packing and GPTQ rows run on every core).
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, TypeVar

import numpy as np
from onnx import TensorProto

from ..errors import ModelFormatError
from .hf import HFModel
from .onnx_ops import INLINE_LIMIT, GraphWriter, nbits_names, store_nbits
from .quant import BlockQuant, QuantSpec, check_blocks, quantize_blocks
from .safetensors_io import MappedFile

if TYPE_CHECKING:
    from .families.weights import Weights

CHUNK_ELEMENTS = 1 << 21          # float32 elements per slice given to a worker (8 MiB)
TRANSPOSE_ROWS = 16384            # rows per slice of a transposed float table (each write >= 32 KiB)
GPTQ_ROWS = 1024                  # fewest rows per GPTQ slice (and the LM head's slice): its column loop costs ~N
_ONNX_FLOAT = {np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.float32): TensorProto.FLOAT}

T = TypeVar("T")
R = TypeVar("R")
QuantizeFn = Callable[[np.ndarray, QuantSpec, str], BlockQuant]


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:          # not Linux
        return max(1, os.cpu_count() or 1)


class Source:
    """A 2-D weight [N, K] read as float32 row slices."""

    def __init__(self, shape: tuple[int, int], rows: Callable[[int, int], np.ndarray],
                 release: Callable[[int, int], None] | None = None) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self._rows, self._release = rows, release

    @classmethod
    def of(cls, w: "np.ndarray | Source") -> "Source":
        if isinstance(w, Source):
            return w
        a = np.asarray(w)
        if a.ndim != 2:
            raise ModelFormatError(f"expected a 2-D weight, got shape {a.shape}")
        return cls(a.shape, lambda lo, hi: np.asarray(a[lo:hi], np.float32))

    @classmethod
    def mapped(cls, model: HFModel, name: str, shape: tuple[int, ...]) -> "Source":
        """Tensor `name` of `model`'s safetensors, read by its own memory map, pages dropped after each slice."""
        info = model.tensor_infos().get(name)
        if info is None:
            raise ModelFormatError(f"tensor {name} is missing from {model.path}")
        if tuple(info.shape) != tuple(shape) or len(shape) != 2:
            raise ModelFormatError(f"tensor {name} has shape {info.shape}, config.json implies {tuple(shape)}")
        mf = MappedFile(info.file)
        row_bytes = info.nbytes // max(1, info.shape[0])

        def release(lo: int, hi: int) -> None:
            mf.release(dataclasses.replace(info, start=info.start + lo * row_bytes, nbytes=(hi - lo) * row_bytes))
        return cls((info.shape[0], info.shape[1]), lambda lo, hi: mf.rows(info, lo, hi), release)

    def rows(self, lo: int, hi: int) -> np.ndarray:
        return self._rows(lo, hi)

    def release(self, lo: int = 0, hi: int | None = None) -> None:
        if self._release is not None:
            self._release(lo, self.shape[0] if hi is None else hi)

    def slices(self, elements: int | None = None) -> list[tuple[int, int]]:
        n, k = self.shape
        step = max(1, (elements or CHUNK_ELEMENTS) // max(1, k))
        return [(lo, min(n, lo + step)) for lo in range(0, n, step)]

    def full(self) -> np.ndarray:
        """The whole weight as float32 [N, K] (for the paths that need it at once)."""
        out = np.empty(self.shape, np.float32)
        for lo, hi in self.slices():
            out[lo:hi] = self.rows(lo, hi)
            self.release(lo, hi)
        return out

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        """Rows for an index array of any shape (the calibration tokens' embeddings), read slice by slice."""
        idx = np.asarray(ids)
        out = np.empty(idx.shape + (self.shape[1],), np.float32)
        for lo, hi in self.slices():
            hit = (idx >= lo) & (idx < hi)
            if hit.any():
                out[hit] = self.rows(lo, hi)[idx[hit] - lo]
                self.release(lo, hi)
        return out


def table_source(model: HFModel, weights: Weights, gguf_name: str, optional: bool = False) -> Source | None:
    """A big 2-D tensor (embedding table, LM head) as row slices read from its memory map, never whole; a
    tensor the family transforms on reading (to_canon) is read whole by Weights instead."""
    if gguf_name not in weights.rules:
        return None
    hf, rule = weights.rules[gguf_name]
    if not model.has_tensor(hf):
        if optional or rule.optional:
            return None
        return Source.of(weights.need(gguf_name))     # raises the missing-tensor error
    if rule.to_canon is not None:
        return Source.of(weights.need(gguf_name))
    return Source.mapped(model, hf, tuple(rule.shape(weights.args)))


def map_ordered(pool: ThreadPoolExecutor | None, fn: Callable[[T], R], items: Iterable[T], ahead: int
                ) -> Iterator[R]:
    """fn over items, results in order, at most `ahead` submitted and not yet consumed (no pool: in line)."""
    if pool is None:
        for item in items:
            yield fn(item)
        return
    pending: list[Future[R]] = []
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.pop(0).result()
    for fut in pending:
        yield fut.result()


def quantize_rows(pool: ThreadPoolExecutor | None, src: Source, spec: QuantSpec, name: str,
                  quantize: QuantizeFn = quantize_blocks, threads: int = 1, elements: int | None = None
                  ) -> Iterator[tuple[int, int, BlockQuant]]:
    """(lo, hi, BlockQuant of rows lo:hi) in row order, slices of `elements` quantized in parallel."""
    def work(span: tuple[int, int]) -> tuple[int, int, BlockQuant]:
        lo, hi = span
        bq = quantize(src.rows(lo, hi), spec, name)
        src.release(lo, hi)
        return lo, hi, bq
    yield from map_ordered(pool, work, src.slices(elements), ahead=threads + 1)


def quantize_parallel(pool: ThreadPoolExecutor | None, w: np.ndarray, spec: QuantSpec, name: str,
                      quantize: QuantizeFn = quantize_blocks, threads: int = 1, min_rows: int = 0) -> BlockQuant:
    """One BlockQuant of the whole weight [N, K], its row slices quantized in parallel (min_rows > 0: at most
    one slice per thread and none under min_rows rows, for quantizers with a per-call cost such as GPTQ's
    column loop; no pool, or one slice: the weight in one call)."""
    src = Source.of(w)
    n, k = src.shape
    slices = max(1, min(threads, n // min_rows)) if min_rows else threads
    if pool is None or (min_rows and slices == 1):
        return quantize(np.asarray(w, np.float32), spec, name)
    elements = -(-n // slices) * k if min_rows else None
    parts = [bq for _, _, bq in quantize_rows(pool, src, spec, name, quantize, threads, elements)]
    if len(parts) == 1:
        return parts[0]
    return BlockQuant(values=np.concatenate([p.values for p in parts]),
                      scales=np.concatenate([p.scales for p in parts]),
                      zero_points=np.concatenate([p.zero_points for p in parts]),
                      bits=spec.bits, block_size=spec.block_size, symmetric=spec.symmetric)


def store_nbits_streamed(g: GraphWriter, name: str, spec: QuantSpec, src: Source,
                         quantize: QuantizeFn = quantize_blocks, elements: int | None = None) -> tuple[str, str, str]:
    """store_nbits for a weight read slice by slice: the packed codes go straight to their region of the data
    file; scales and zero points (1/8 of the codes at most) are gathered and written after, as store_nbits does."""
    n, k = src.shape
    check_blocks(name, (n, k), spec.block_size)
    nb = k // spec.block_size
    row_bytes = nb * spec.block_size * spec.bits // 8
    if n * row_bytes <= INLINE_LIMIT:
        return store_nbits(g, name, spec, quantize(src.full(), spec, name))
    qn, sn, zn = nbits_names(name, spec)
    offset = g.external_region(qn, TensorProto.UINT8, (n, nb, row_bytes // nb), n * row_bytes, spec.label)
    scales: list[np.ndarray] = []
    zeros: list[np.ndarray] = []
    for lo, hi, bq in quantize_rows(g.pool, src, spec, name, quantize, g.threads, elements):
        g.write_at(offset + lo * row_bytes, np.ascontiguousarray(bq.packed()))
        scales.append(bq.scales.reshape(hi - lo, nb))
        if zn:
            zeros.append(bq.packed_zero_points().reshape(hi - lo, -1))
    g.initializer(sn, np.concatenate(scales))
    if zn:
        g.initializer(zn, np.concatenate(zeros))
    return qn, sn, zn


def store_float_streamed(g: GraphWriter, name: str, src: Source, dtype: type, label: str,
                         transpose: bool = False) -> str:
    """A float16/float32 table (transposed to [K, N] when `transpose`), written slice by slice."""
    n, k = src.shape
    dt = np.dtype(dtype)
    nbytes = n * k * dt.itemsize
    if nbytes <= INLINE_LIMIT:
        full = src.full().astype(dt)
        return g.initializer(name, full.T if transpose else full, label)
    offset = g.external_region(name, _ONNX_FLOAT[dt], (k, n) if transpose else (n, k), nbytes, label)
    for lo, hi in src.slices(max(CHUNK_ELEMENTS, TRANSPOSE_ROWS * k) if transpose else CHUNK_ELEMENTS):
        part = src.rows(lo, hi).astype(dt)                           # [hi-lo, K]
        src.release(lo, hi)
        if not transpose:
            g.write_at(offset + lo * k * dt.itemsize, np.ascontiguousarray(part))
        elif lo == 0 and hi == n:
            g.write_at(offset, np.ascontiguousarray(part.T))
        else:
            cols = np.ascontiguousarray(part.T)                      # [K, hi-lo]: row c is W.T[c, lo:hi]
            for c in range(k):
                g.write_at(offset + (c * n + lo) * dt.itemsize, cols[c])
    return name
