"""The `.imatrix` file llama.cpp's tools read (`llama-quantize --imatrix x.imatrix`): a GGUF with
general.type = "imatrix", `imatrix.datasets` / `imatrix.chunk_count` / `imatrix.chunk_size`, and per weight
two F32 tensors: `<name>.in_sum2` (ggml ne = [columns, matrices]: the sums of x²) and `<name>.counts`
(ne = [1, matrices]: how many activation rows were summed). llama.cpp divides one by the other on load.
Dense models have one matrix per weight (MoE experts would have one row each).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError
from .imatrix import ImportanceMatrix

SUMS, COUNTS = ".in_sum2", ".counts"


def write_imatrix(matrix: ImportanceMatrix, path: str | Path) -> Path:
    """Write `matrix` as a GGUF imatrix file (to a temp name, renamed when complete)."""
    import gguf

    out = Path(path)
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(tmp, "imatrix")
    try:
        writer.add_type(gguf.GGUFType.IMATRIX)
        writer.add_array(gguf.Keys.IMatrix.DATASETS, list(matrix.datasets) or ["edgellm"])
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, int(matrix.chunk_count))
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, int(matrix.chunk_size))
        for name in matrix.names:
            writer.add_tensor(name + SUMS, matrix.sums[name].astype(np.float32)[None, :])     # numpy [1, K]
            writer.add_tensor(name + COUNTS, np.array([[matrix.counts[name]]], np.float32))    # numpy [1, 1]
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out)
    return out


def read_imatrix(path: str | Path) -> ImportanceMatrix:
    """Read a GGUF imatrix file (ours or llama-imatrix's; one matrix per weight)."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path} is not a GGUF imatrix file ({exc})",
                               "write one with edgellm or llama-imatrix (legacy .dat files are not read)") from None

    def field(key: str) -> object:
        f = reader.fields.get(key)
        if f is None:
            raise ModelFormatError(f"{path} lacks the imatrix key {key}", "is it an imatrix file?")
        return f.contents()

    datasets = field(gguf.Keys.IMatrix.DATASETS)
    matrix = ImportanceMatrix(datasets=list(datasets) if isinstance(datasets, list) else [str(datasets)],
                              chunk_count=int(field(gguf.Keys.IMatrix.CHUNK_COUNT)),  # type: ignore[call-overload]  # untyped gguf-py value
                              chunk_size=int(field(gguf.Keys.IMatrix.CHUNK_SIZE)))  # type: ignore[call-overload]  # untyped gguf-py value
    tensors = {t.name: np.asarray(t.data, np.float32) for t in reader.tensors}
    for key, sums in tensors.items():
        if not key.endswith(SUMS):
            continue
        name = key[: -len(SUMS)]
        counts = tensors.get(name + COUNTS)
        if counts is None:
            raise ModelFormatError(f"{path}: {name} has sums but no counts")
        if sums.reshape(-1, sums.shape[-1]).shape[0] != 1 or counts.size != 1:
            raise ModelFormatError(f"{path}: {name} holds several matrices (experts); edgellm reads dense ones")
        matrix.sums[name] = sums.reshape(-1).astype(np.float64)
        matrix.counts[name] = int(round(float(counts.reshape(-1)[0])))
    return matrix
