"""Our GGUF reader: same answers as gguf-py's reader, and every size checked before it is trusted."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_reading import field_value, metadata, open_gguf
from edgellm.errors import ModelFormatError


@pytest.fixture(scope="module")
def tiny_q8(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    return convert_to_gguf(tiny_models(tied=False), tmp_path_factory.mktemp("r") / "a", "Q8_0").path


def test_matches_gguf_py_reader(tiny_q8: Path) -> None:
    import gguf

    ours, ref = open_gguf(tiny_q8), gguf.GGUFReader(tiny_q8)
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors):
        assert tuple(a.shape) == tuple(b.shape.tolist()) and a.tensor_type == b.tensor_type
        assert a.data_offset == b.data_offset and np.array_equal(a.data, b.data)
    for key, field in ref.fields.items():
        if not key.startswith("GGUF."):
            value = field.contents()
            assert ours.fields[key] == value or abs(ours.fields[key] - value) < 1e-6, key
    assert field_value(ours, "tokenizer.ggml.pre") == "smollm"
    assert metadata(ours)["tokenizer.ggml.tokens"] == "<array of 384>"


@pytest.mark.parametrize("cut", [3, 20, 2000, -100])
def test_truncated_files_are_refused(cut: int, tiny_q8: Path, tmp_path: Path) -> None:
    data = tiny_q8.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[:cut])
    with pytest.raises(ModelFormatError):
        open_gguf(bad)


def test_bad_magic_and_absurd_counts(tiny_q8: Path, tmp_path: Path) -> None:
    data = bytearray(tiny_q8.read_bytes())
    bad = tmp_path / "magic.gguf"
    bad.write_bytes(b"GGML" + data[4:])
    with pytest.raises(ModelFormatError, match="magic"):
        open_gguf(bad)
    data[8:16] = (2**60).to_bytes(8, "little")  # tensor count
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="corrupt"):
        open_gguf(bad)
