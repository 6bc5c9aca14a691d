"""Safetensors read (memory-mapped, validated) and write (streamed, atomic).

The header is validated before any size in it is trusted: its length against the file size,
every tensor's byte range against the data section and against dtype x shape.
"""
from __future__ import annotations

import errno
import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from ..errors import ModelFormatError, OutputPathError
from .limits import as_int, loads_json, shape_elements

# safetensors dtype name -> (numpy dtype used to view the bytes, element size)
_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1),
    "U8": ("u1", 1), "BOOL": ("?", 1),
}
_MAX_HEADER = 100 * 1024 * 1024
_MAX_TENSORS = 1 << 18         # per file; real shards hold a few thousand at most


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str                 # safetensors dtype name, e.g. "BF16"
    shape: tuple[int, ...]
    file: Path
    start: int                 # absolute byte offset in file
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header. Returns (tensors, metadata).

    Checked before anything is trusted: the header length against the file, the JSON (size, depth, UTF-8), every
    entry's dtype, shape (ints >= 0, product below 2^63) and byte range (inside the data section, matching
    dtype x shape, no two tensors overlapping)."""
    try:
        size = path.stat().st_size
        if size < 8:
            raise ModelFormatError(f"{path} is {size} bytes: too short to be a safetensors file")
        with open(path, "rb") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            if hlen > _MAX_HEADER or 8 + hlen > size:
                raise ModelFormatError(f"{path}: header claims {hlen} bytes but the file has {size}; "
                                       "the file is truncated or not safetensors")
            raw = f.read(hlen)
    except OSError as exc:
        raise ModelFormatError(f"{path} cannot be read ({exc.strerror or exc})", "check the file's permissions") \
            from None
    header = loads_json(raw, f"{path} (safetensors header)", error=ModelFormatError)
    if len(header) > _MAX_TENSORS:
        raise ModelFormatError(f"{path}: the header lists {len(header)} tensors (at most {_MAX_TENSORS} per file)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ModelFormatError(f"{path}: __metadata__ must map strings to strings")
    data_start, data_len = 8 + hlen, size - 8 - hlen
    tensors: dict[str, TensorInfo] = {}
    ranges: list[tuple[int, int, str]] = []
    for name, spec in header.items():
        where = f"{path}: tensor {name[:80]!r}"
        if not isinstance(spec, dict) or not isinstance(spec.get("dtype"), str) \
                or not isinstance(spec.get("shape"), list) or not isinstance(spec.get("data_offsets"), list) \
                or len(spec["data_offsets"]) != 2 or len(spec["shape"]) > 8:
            raise ModelFormatError(f"{where} has a malformed header entry (dtype, shape, data_offsets)")
        dtype = spec["dtype"]
        if dtype not in _DTYPES:
            raise ModelFormatError(f"{where} has unsupported dtype {dtype[:20]!r}")
        n = shape_elements(spec["shape"], where, max_elements=max(data_len, 0))
        shape = tuple(int(d) for d in spec["shape"])
        lo, hi = (as_int(v, "data_offsets", where, error=ModelFormatError) for v in spec["data_offsets"])
        if not (lo <= hi <= data_len) or hi - lo != n * _DTYPES[dtype][1]:
            raise ModelFormatError(
                f"{where} needs bytes [{lo}, {hi}) of a {data_len}-byte data section "
                f"({n} x {dtype}); the file is truncated or corrupt")
        tensors[name] = TensorInfo(name, dtype, shape, path, data_start + lo, hi - lo)
        if hi > lo:
            ranges.append((lo, hi, name))
    ranges.sort()
    for (_, end_a, a), (start_b, _, b) in zip(ranges, ranges[1:]):
        if start_b < end_a:
            raise ModelFormatError(f"{path}: tensors {a!r} and {b!r} overlap in the data section")
    return tensors, meta


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) -> float32, exact."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


class MappedFile:
    """A read-only memory map of one safetensors file; tensors are views, paged in on use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._f = open(path, "rb")
        except OSError as exc:
            raise ModelFormatError(f"{path} cannot be read ({exc.strerror or exc})") from None
        try:
            self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            self._f.close()
            raise ModelFormatError(f"{path} cannot be memory-mapped ({exc})") from None

    def view(self, info: TensorInfo, as_float32: bool = True) -> np.ndarray:
        np_dtype, _ = _DTYPES[info.dtype]
        arr = np.frombuffer(self._mm, dtype=np_dtype, count=info.n_elements, offset=info.start)
        arr = arr.reshape(info.shape)
        if info.dtype == "BF16":
            return bf16_to_f32(arr) if as_float32 else arr
        return arr

    def rows(self, info: TensorInfo, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a tensor as float32, converting only that slice."""
        raw = self.view(info, as_float32=False)[start:stop]
        return bf16_to_f32(raw) if info.dtype == "BF16" else raw.astype(np.float32, copy=False)

    def release(self, info: TensorInfo) -> None:
        """Drop a tensor's pages from this process's resident set (they stay in the page cache), so
        streaming a model through memory keeps RSS near one tensor, not the file size."""
        page = mmap.PAGESIZE
        start = info.start - info.start % page
        length = info.start + info.nbytes - start
        if hasattr(self._mm, "madvise") and hasattr(mmap, "MADV_DONTNEED") and length > 0:
            self._mm.madvise(mmap.MADV_DONTNEED, start, length)

    def close(self) -> None:
        try:
            self._mm.close()
        except BufferError:  # a view still alive; the map is freed with it
            pass
        self._f.close()


def write_safetensors(path: Path, specs: Iterable[tuple[str, str, tuple[int, ...]]],
                      tensors: Iterator[tuple[str, np.ndarray]], metadata: dict[str, str] | None = None) -> None:
    """Stream tensors into `path` (atomically: temp file then rename).

    `specs` lists (name, safetensors dtype, shape) in file order, so the header is written first;
    `tensors` then yields (name, array) in the same order, one at a time. BF16 arrays are given as
    float32 and converted here.
    """
    specs = list(specs)
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, dtype, shape in specs:
        n = 1
        for d in shape:
            n *= d
        nbytes = n * _DTYPES[dtype][1]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for (name, dtype, shape), (got_name, arr) in zip(specs, tensors, strict=True):
                if got_name != name or tuple(arr.shape) != tuple(shape):
                    raise ModelFormatError(f"tensor {got_name} {arr.shape} arrived where {name} {shape} was declared")
                _write_array(f, arr, dtype)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}" +
                              (" (the disk is full)" if exc.errno == errno.ENOSPC else "")) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_array(f: BinaryIO, arr: np.ndarray, dtype: str) -> None:
    if dtype == "BF16":
        data = f32_to_bf16(arr) if arr.dtype != np.uint16 else arr
    else:
        data = np.ascontiguousarray(arr, dtype=_DTYPES[dtype][0])
    f.write(np.ascontiguousarray(data).tobytes())


__all__ = ["TensorInfo", "MappedFile", "read_header", "write_safetensors", "bf16_to_f32", "f32_to_bf16"]
