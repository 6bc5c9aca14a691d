"""Where the integer fields of a GGUF file sit (for the mutator) and a builder of hostile GGUF files."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def field_slots(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every count, length, type, dimension and offset field in a valid GGUF's header."""
    slots = [(4, 4), (8, 8), (16, 8)]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def string(pos: int, record: bool = True) -> int:
        if record:
            slots.append((pos, 8))
        (n,) = struct.unpack_from("<Q", data, pos)
        return pos + 8 + n

    for _ in range(n_kv):
        pos = string(pos)
        slots.append((pos, 4))
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if vtype == 8:
            pos = string(pos)
        elif vtype == 9:
            slots.append((pos, 4))
            slots.append((pos + 4, 8))
            etype, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            for i in range(count):
                if etype == 8:
                    pos = string(pos, record=i < 3)
                else:
                    if i < 3:
                        slots.append((pos, _SIZES[etype]))
                    pos += _SIZES[etype]
        else:
            slots.append((pos, _SIZES[vtype]))
            pos += _SIZES[vtype]
    for _ in range(n_tensors):
        pos = string(pos)
        (n_dims,) = struct.unpack_from("<I", data, pos)
        slots.append((pos, 4))
        pos += 4
        for _ in range(n_dims):
            slots.append((pos, 8))
            pos += 8
        slots += [(pos, 4), (pos + 4, 8)]
        pos += 12
    return slots


def rewrite_gguf(src: Path, dst: Path, *, drop: tuple[str, ...] = (), add: dict[str, tuple[Any, Any]] | None = None,
                 alignment: int | None = None) -> Path:
    """Copy a GGUF through gguf-py with metadata keys dropped or added ({key: (value, GGUFValueType)}), to build
    files that are well-formed but say hostile things."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(dst), arch)
    if alignment is not None:
        writer.data_alignment = alignment
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in drop or key == "general.architecture" or key in (add or {}):
            continue
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, f.contents(), vtype, sub_type=f.types[-1])
        else:
            writer.add_key_value(key, f.contents(), vtype)
    for key, (value, vtype) in (add or {}).items():
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value[0], vtype, sub_type=value[1])
        else:
            writer.add_key_value(key, value, vtype)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv_u32(key: str, value: int) -> bytes:
    return _s(key) + struct.pack("<II", 4, value)


def kv_str(key: str, value: str) -> bytes:
    return _s(key) + struct.pack("<I", 8) + _s(value)


def raw_gguf(kvs: list[bytes], tensors: list[tuple[str, list[int], int, int]], data: bytes = b"",
             alignment: int = 32, n_kv: int | None = None, n_tensors: int | None = None) -> bytes:
    """Hand-assemble a GGUF v3 file: pre-encoded key/value records, tensor infos (name, dims, type, offset) and
    a data section placed at `alignment` after the header. Nothing is checked: that is the point."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if n_tensors is None else n_tensors,
                                len(kvs) if n_kv is None else n_kv)
    out += b"".join(kvs)
    for name, dims, ttype, offset in tensors:
        out += _s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ttype, offset)
    out += b"\0" * (-len(out) % alignment)
    return out + data
