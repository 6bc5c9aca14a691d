"""A fast, validating GGUF reader (header, metadata, tensor table; tensor data memory-mapped).

gguf-py's GGUFReader builds a numpy view per array element, which takes seconds on a 50k-token vocabulary;
this reader walks the header once with `struct` and checks every size against the file before trusting it.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError

GGUF_MAGIC = b"GGUF"
_SCALARS: dict[int, tuple[str, int]] = {  # GGUF value type -> (struct code, size)
    0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4), 6: ("f", 4), 7: ("?", 1),
    10: ("Q", 8), 11: ("q", 8), 12: ("d", 8),
}
_NP_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
               12: "<f8"}
_STRING, _ARRAY = 8, 9
_MAX_COUNT = 1 << 32


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]        # ggml order (ne0 first), as GGUF stores it
    tensor_type: Any              # gguf.GGMLQuantizationType
    data_offset: int              # absolute, in the file
    n_elements: int
    n_bytes: int
    _file: "GGUFFile"

    @property
    def data(self) -> np.ndarray:
        """The raw tensor, memory-mapped: typed for F32/F16/BF16-as-uint16/ints, bytes per row otherwise
        (numpy order: the last axis is ne0), the layout gguf.quants.dequantize expects."""
        import gguf

        np_shape = tuple(reversed(self.shape))
        name = self.tensor_type.name
        typed = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8",
                 "BF16": "<u2"}.get(name)
        buf = self._file.buffer
        if typed is not None:
            return np.frombuffer(buf, dtype=typed, count=self.n_elements, offset=self.data_offset).reshape(np_shape)
        block, size = gguf.GGML_QUANT_SIZES[self.tensor_type]
        row_bytes = np_shape[-1] // block * size
        arr = np.frombuffer(buf, dtype=np.uint8, count=self.n_bytes, offset=self.data_offset)
        return arr.reshape(*np_shape[:-1], row_bytes)


class _LazyStrings:
    """A long string array, decoded on first access."""

    def __init__(self, f: "GGUFFile", pos: int, count: int) -> None:
        self.f, self.pos, self.count = f, pos, count

    def load(self) -> list[str]:
        out, pos = [], self.pos
        for _ in range(self.count):
            item, pos = self.f._str(pos)
            out.append(item)
        return out


class _Fields(dict):  # type: ignore[type-arg]
    """Metadata keys; long string arrays are decoded when first read."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, _LazyStrings):
            value = value.load()
            super().__setitem__(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def length(self, key: str) -> int:
        value = super().__getitem__(key)
        return value.count if isinstance(value, _LazyStrings) else len(value) if isinstance(value, list) else 1


class GGUFFile:
    """A parsed GGUF file. `fields` holds every metadata key (arrays as lists or numpy arrays)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "rb")
        try:
            self.buffer = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise ModelFormatError(f"{path} is empty") from None
        self.size = len(self.buffer)
        self.fields: _Fields = _Fields()
        self.tensors: list[GGUFTensor] = []
        self._parse()

    # -- primitive readers (every read is bounds-checked) --------------------------------------
    def _need(self, pos: int, n: int) -> None:
        if n < 0 or pos + n > self.size:
            raise ModelFormatError(f"{self.path}: header runs past the end of the file; it is truncated or corrupt")

    def _u(self, pos: int, code: str, size: int) -> tuple[Any, int]:
        self._need(pos, size)
        return struct.unpack_from("<" + code, self.buffer, pos)[0], pos + size

    def _str(self, pos: int) -> tuple[str, int]:
        n, pos = self._u(pos, "Q", 8)
        self._need(pos, n)
        return bytes(self.buffer[pos:pos + n]).decode("utf-8", errors="replace"), pos + n

    def _value(self, pos: int, vtype: int) -> tuple[Any, int]:
        if vtype in _SCALARS:
            code, size = _SCALARS[vtype]
            return self._u(pos, code, size)
        if vtype == _STRING:
            return self._str(pos)
        if vtype == _ARRAY:
            etype, pos = self._u(pos, "I", 4)
            count, pos = self._u(pos, "Q", 8)
            if count > _MAX_COUNT:
                raise ModelFormatError(f"{self.path}: an array claims {count} elements")
            if etype == _STRING and count > 256:  # vocabularies: find the end now, decode on first use
                start = pos
                for _ in range(count):
                    n, pos = self._u(pos, "Q", 8)
                    pos += n
                self._need(pos, 0)
                return _LazyStrings(self, start, count), pos
            if etype in _NP_SCALARS:
                size = _SCALARS[etype][1]
                self._need(pos, count * size)
                arr = np.frombuffer(self.buffer, dtype=_NP_SCALARS[etype], count=count, offset=pos)
                return arr.tolist(), pos + count * size
            out = []
            for _ in range(count):
                item, pos = self._value(pos, etype)
                out.append(item)
            return out, pos
        raise ModelFormatError(f"{self.path}: unknown GGUF value type {vtype}")

    def _parse(self) -> None:
        import gguf

        self._need(0, 24)
        if self.buffer[:4] != GGUF_MAGIC:
            raise ModelFormatError(f"{self.path} is not a GGUF file (bad magic)")
        version, pos = self._u(4, "I", 4)
        if version not in (2, 3):
            raise ModelFormatError(f"{self.path}: unsupported GGUF version {version}")
        n_tensors, pos = self._u(pos, "Q", 8)
        n_kv, pos = self._u(pos, "Q", 8)
        if n_tensors > self.size // 16 or n_kv > self.size // 16:
            raise ModelFormatError(f"{self.path}: header claims {n_tensors} tensors / {n_kv} keys; it is corrupt")
        for _ in range(n_kv):
            key, pos = self._str(pos)
            vtype, pos = self._u(pos, "I", 4)
            self.fields[key], pos = self._value(pos, vtype)
        infos = []
        for _ in range(n_tensors):
            name, pos = self._str(pos)
            n_dims, pos = self._u(pos, "I", 4)
            if n_dims > 8:
                raise ModelFormatError(f"{self.path}: tensor {name} claims {n_dims} dimensions")
            dims = []
            for _ in range(n_dims):
                d, pos = self._u(pos, "Q", 8)
                dims.append(d)
            ttype, pos = self._u(pos, "I", 4)
            offset, pos = self._u(pos, "Q", 8)
            infos.append((name, tuple(dims), ttype, offset))
        align = int(self.fields.get("general.alignment", 32))
        data_start = pos + (-pos % align)
        for name, dims, ttype, offset in infos:
            try:
                qtype = gguf.GGMLQuantizationType(ttype)
                block, size = gguf.GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise ModelFormatError(f"{self.path}: tensor {name} has unknown type {ttype}") from None
            n = int(np.prod(dims, dtype=np.int64)) if dims else 1
            if dims and dims[0] % block:
                raise ModelFormatError(f"{self.path}: tensor {name} rows of {dims[0]} are not whole {qtype.name} blocks")
            nbytes = n // block * size
            start = data_start + offset
            if start + nbytes > self.size:
                raise ModelFormatError(f"{self.path}: tensor {name} runs past the end of the file; it is truncated")
            self.tensors.append(GGUFTensor(name, dims, qtype, start, n, nbytes, self))

    def close(self) -> None:
        try:
            self.buffer.close()
        except BufferError:  # a tensor view is still alive; the map goes with it
            pass
        self._f.close()


def open_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header after validating every size in it against the file."""
    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"{p} does not exist or is not a file")
    return GGUFFile(p)


def field_value(reader: GGUFFile, key: str, default: Any = None) -> Any:
    return reader.fields.get(key, default)


def metadata(reader: GGUFFile, skip_arrays_longer_than: int = 64) -> dict[str, Any]:
    """Every metadata key except huge arrays (vocabularies), for display and manifests."""
    out: dict[str, Any] = {}
    for key in reader.fields:
        n = reader.fields.length(key)
        out[key] = f"<array of {n}>" if n > skip_arrays_longer_than else reader.fields[key]
    return out
