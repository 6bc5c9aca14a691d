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
_STRING, _ARRAY, _U32 = 8, 9, 4
# llama.cpp's own limits (ggml/src/gguf.cpp, ggml.h)
MAX_STRING = 1 << 30          # GGUF_MAX_STRING_LENGTH
MAX_ARRAY = 1 << 30           # GGUF_MAX_ARRAY_ELEMENTS
# Ours, tighter, so parsing time stays bounded (each item is a Python step): real files hold < 1,000 keys, < 100k
# tensors, and string arrays (vocabularies, merges) of < 1M items.
MAX_KEYS, MAX_TENSORS, MAX_STRING_ARRAY = 1 << 16, 1 << 20, 1 << 22
MAX_NAME = 64                 # GGML_MAX_NAME: tensor names are shorter
MAX_DIMS = 4                  # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32        # GGUF_DEFAULT_ALIGNMENT
NATIVE_ALIGNMENT = 32         # TENSOR_ALIGNMENT: ggml_backend_cpu_buffer_from_ptr asserts it on mmap'd data
INT64_LIMIT = 1 << 63


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
    """A long string array, decoded on first access (its extent was validated when the header was parsed)."""

    def __init__(self, f: "GGUFFile", pos: int, count: int) -> None:
        self.f, self.pos, self.count = f, pos, count

    def load(self) -> list[str]:
        out, pos = [], self.pos
        for _ in range(self.count):
            item, pos = self.f._str(pos)
            out.append(item)
        return out


class _Fields(dict[str, Any]):
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
    """A parsed GGUF file. `fields` holds every metadata key (arrays as lists); `types` each key's GGUF value
    type as (type, element type or None).

    Parsing validates everything llama.cpp's loader (gguf.cpp) checks before it trusts a size, so a file this
    accepts is never handed to native code that would abort on it: magic and version, counts bounded by the file
    size, string lengths, value types (no nested arrays), unique non-empty keys and tensor names (< 64 bytes),
    `general.alignment` a u32 power of two, at most 4 dimensions each >= 1 with products below 2^63, known tensor
    types with whole blocks per row, offsets packed in order at the alignment (as gguf.cpp requires), 32-byte
    aligned data (ggml's CPU buffers assert it) and every byte range inside the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "rb")
        try:
            self.buffer = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            self._f.close()
            raise ModelFormatError(f"{path} is empty") from None
        self.size = len(self.buffer)
        self.fields: _Fields = _Fields()
        self.types: dict[str, tuple[int, int | None]] = {}
        self.tensors: list[GGUFTensor] = []
        self.alignment = DEFAULT_ALIGNMENT
        self.data_start = 0
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def _bad(self, what: str, pos: int | None = None) -> ModelFormatError:
        at = f" (at byte {pos})" if pos is not None else ""
        return ModelFormatError(f"{self.path}: {what}{at}; the file is corrupt or not a GGUF llama.cpp can load")

    # -- primitive readers (every read is bounds-checked) --------------------------------------
    def _need(self, pos: int, n: int) -> None:
        if n < 0 or pos + n > self.size:
            raise ModelFormatError(f"{self.path}: header runs past the end of the file at byte {pos} "
                                   f"(needs {n} more bytes of {self.size}); it is truncated or corrupt")

    def _u(self, pos: int, code: str, size: int) -> tuple[Any, int]:
        self._need(pos, size)
        return struct.unpack_from("<" + code, self.buffer, pos)[0], pos + size

    def _strlen(self, pos: int) -> tuple[int, int]:
        n, pos = self._u(pos, "Q", 8)
        if n > MAX_STRING:
            raise self._bad(f"a string claims {n} bytes", pos - 8)
        self._need(pos, n)
        return n, pos

    def _str(self, pos: int) -> tuple[str, int]:
        n, pos = self._strlen(pos)
        return bytes(self.buffer[pos:pos + n]).decode("utf-8", errors="replace"), pos + n

    def _strict_str(self, pos: int, what: str) -> tuple[str, int]:
        n, start = self._strlen(pos)
        try:
            return bytes(self.buffer[start:start + n]).decode("utf-8"), start + n
        except UnicodeDecodeError:
            raise self._bad(f"{what} is not UTF-8", pos) from None

    def _value(self, pos: int, vtype: int, key: str) -> tuple[Any, int, int | None]:
        """(value, next position, array element type or None)."""
        if vtype in _SCALARS:
            code, size = _SCALARS[vtype]
            value, pos = self._u(pos, code, size)
            return value, pos, None
        if vtype == _STRING:
            value, pos = self._str(pos)
            return value, pos, None
        if vtype != _ARRAY:
            raise self._bad(f"key {key!r} has unknown value type {vtype}", pos)
        etype, pos = self._u(pos, "I", 4)
        count, pos = self._u(pos, "Q", 8)
        if etype == _ARRAY:
            raise self._bad(f"key {key!r} holds a nested array (llama.cpp refuses them)", pos)
        if etype != _STRING and etype not in _SCALARS:
            raise self._bad(f"key {key!r} is an array of unknown type {etype}", pos)
        unit = 8 if etype == _STRING else _SCALARS[etype][1]   # a string needs at least its 8-byte length
        if count > (MAX_STRING_ARRAY if etype == _STRING else MAX_ARRAY) or count * unit > self.size - pos:
            raise self._bad(f"key {key!r} claims {count} array elements, more than the file holds", pos)
        if etype == _STRING:
            start = pos
            for _ in range(count):
                n, pos = self._strlen(pos)
                pos += n
            if count > 256:  # vocabularies: extent validated now, decoded on first use
                return _LazyStrings(self, start, count), pos, etype
            return _LazyStrings(self, start, count).load(), pos, etype
        arr = np.frombuffer(self.buffer, dtype=_NP_SCALARS[etype], count=count, offset=pos)
        return arr.tolist(), pos + count * unit, etype

    def _parse(self) -> None:
        self._need(0, 24)
        if self.buffer[:4] != GGUF_MAGIC:
            raise ModelFormatError(f"{self.path} is not a GGUF file (bad magic)")
        version, pos = self._u(4, "I", 4)
        if version not in (2, 3):
            raise ModelFormatError(f"{self.path}: unsupported GGUF version {version} (2 and 3 are read)")
        n_tensors, pos = self._u(pos, "Q", 8)
        n_kv, pos = self._u(pos, "Q", 8)
        # smallest records: a key is 8 (length) + 1 + 4 (type) + 1 bytes; a tensor info 8 + 1 + 4 + 8 + 4 + 8
        if n_tensors > min(self.size // 33, MAX_TENSORS) or n_kv > min(self.size // 14, MAX_KEYS):
            raise ModelFormatError(f"{self.path}: header claims {n_tensors} tensors / {n_kv} keys in "
                                   f"{self.size} bytes; it is corrupt")
        for _ in range(n_kv):
            key_pos = pos
            key, pos = self._strict_str(pos, "a metadata key")
            if not key:
                raise self._bad("a metadata key is empty", key_pos)
            if key in self.types:
                raise self._bad(f"metadata key {key!r} appears twice", key_pos)
            vtype, pos = self._u(pos, "I", 4)
            value, pos, etype = self._value(pos, vtype, key)
            dict.__setitem__(self.fields, key, value)
            self.types[key] = (vtype, etype)
        if "general.alignment" in self.types:
            if self.types["general.alignment"] != (_U32, None):
                raise self._bad("general.alignment must be a u32")
            align = int(self.fields["general.alignment"])
            if align <= 0 or align & (align - 1):
                raise self._bad(f"general.alignment={align} is not a power of two")
            self.alignment = align
        infos: list[tuple[str, tuple[int, ...], int, int]] = []
        names: set[str] = set()
        for _ in range(n_tensors):
            name_pos = pos
            name, pos = self._strict_str(pos, "a tensor name")
            if not name or len(name.encode()) >= MAX_NAME:
                raise self._bad(f"tensor name {name[:80]!r} is empty or {MAX_NAME} bytes or longer", name_pos)
            if name in names:
                raise self._bad(f"tensor {name!r} appears twice", name_pos)
            names.add(name)
            n_dims, pos = self._u(pos, "I", 4)
            if n_dims > MAX_DIMS:
                raise self._bad(f"tensor {name} claims {n_dims} dimensions (at most {MAX_DIMS})", pos - 4)
            dims = []
            for _ in range(n_dims):
                d, pos = self._u(pos, "Q", 8)
                dims.append(d)
            ttype, pos = self._u(pos, "I", 4)
            offset, pos = self._u(pos, "Q", 8)
            infos.append((name, tuple(dims), ttype, offset))
        self.data_start = data_start = pos + (-pos % self.alignment) if infos else pos
        expected = 0
        for name, shape, ttype, offset in infos:
            qtype, n, nbytes = self._tensor_size(name, shape, ttype)
            if offset != expected:
                raise self._bad(f"tensor {name} starts at data offset {offset}, expected {expected} "
                                "(tensors must be packed in order at the file's alignment)")
            start = data_start + offset
            if start % NATIVE_ALIGNMENT:
                raise self._bad(f"tensor {name} data at byte {start} is not {NATIVE_ALIGNMENT}-byte aligned "
                                "(llama.cpp's CPU buffers require it)")
            if start + nbytes > self.size:
                raise ModelFormatError(f"{self.path}: tensor {name} needs bytes [{start}, {start + nbytes}) of a "
                                       f"{self.size}-byte file; it is truncated")
            expected = offset + nbytes + (-nbytes % self.alignment)
            self.tensors.append(GGUFTensor(name, shape, qtype, start, n, nbytes, self))

    def _tensor_size(self, name: str, dims: tuple[int, ...], ttype: int) -> tuple[Any, int, int]:
        """(type, elements, bytes) of a tensor, with every check ggml makes, in Python ints (no wrap-around)."""
        import gguf

        try:
            qtype = gguf.GGMLQuantizationType(ttype)
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise self._bad(f"tensor {name} has unknown type {ttype}") from None
        if block <= 0 or type_size <= 0:
            raise self._bad(f"tensor {name} has type {qtype.name}, which has no size")
        n = 1
        for i, d in enumerate(dims):
            if not 1 <= d < INT64_LIMIT:
                raise self._bad(f"tensor {name} dimension {i} is {d} (each must be between 1 and 2^63-1)")
            n *= d
            if n >= INT64_LIMIT or n > self.size * block:
                raise self._bad(f"tensor {name} shape {list(dims)} holds more elements than the file could store")
        if dims and dims[0] % block:
            raise self._bad(f"tensor {name} rows of {dims[0]} are not whole {qtype.name} blocks of {block}")
        return qtype, n, n // block * type_size

    def close(self) -> None:
        try:
            self.buffer.close()
        except BufferError:  # a tensor view is still alive; the map goes with it
            pass
        self._f.close()

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header after validating every size in it against the file (see `GGUFFile`)."""
    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"{p} does not exist or is not a file")
    try:
        return GGUFFile(p)
    except OSError as exc:
        raise ModelFormatError(f"{p} cannot be read ({exc.strerror or exc})", "check the file's permissions") from None


def field_value(reader: GGUFFile, key: str, default: Any = None) -> Any:
    return reader.fields.get(key, default)


def metadata(reader: GGUFFile, skip_arrays_longer_than: int = 64) -> dict[str, Any]:
    """Every metadata key except huge arrays (vocabularies), for display and manifests."""
    out: dict[str, Any] = {}
    for key in reader.fields:
        n = reader.fields.length(key)
        out[key] = f"<array of {n}>" if n > skip_arrays_longer_than else reader.fields[key]
    return out
