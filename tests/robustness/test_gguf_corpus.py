"""Hand-written hostile GGUF files, one per class of problem llama.cpp's loader asserts on or edgellm's reader
once let through: each must be refused with ModelFormatError (or ChatTemplateError), by the reader and by
`edgellm.load` in a child process (so a native abort would be counted, not fatal)."""
from __future__ import annotations

import struct
from pathlib import Path

import gguf
import pytest

from edgellm.converters.gguf_checks import validate_gguf
from edgellm.errors import ChatTemplateError, ModelFormatError
from tests.robustness.gguf_seed import _s, kv_str, kv_u32, raw_gguf, rewrite_gguf
from tests.robustness.native import native_loads
from tests.robustness.tally import assert_clean, classify

V = gguf.GGUFValueType
A = "general.architecture"
F32, Q8_0 = 0, 8


def _arr(key: str, etype: int, items: list[bytes]) -> bytes:
    return _s(key) + struct.pack("<IIQ", 9, etype, len(items)) + b"".join(items)


def _nested(depth: int) -> bytes:
    body = struct.pack("<IQ", 4, 1) + struct.pack("<I", 7)
    for _ in range(depth):
        body = struct.pack("<IQ", 9, 1) + body
    return _s("deep") + struct.pack("<I", 9) + body


ARCH = kv_str(A, "llama")
ONE_F32 = [("t", [8], F32, 0)]
DATA = b"\0" * 64
STRUCTURAL: dict[str, bytes] = {
    "alignment_1_unaligned_data": raw_gguf([ARCH, kv_u32("general.alignment", 1)], [("t", [8], F32, 0)],
                                           b"\0" * 40, alignment=1),
    "alignment_0": raw_gguf([ARCH, kv_u32("general.alignment", 0)], ONE_F32, DATA),
    "alignment_3": raw_gguf([ARCH, kv_u32("general.alignment", 3)], ONE_F32, DATA),
    "alignment_string": raw_gguf([ARCH, kv_str("general.alignment", "32")], ONE_F32, DATA),
    "alignment_array": raw_gguf([ARCH, _arr("general.alignment", 4, [struct.pack("<I", 32)])], ONE_F32, DATA),
    "alignment_u64": raw_gguf([ARCH, _s("general.alignment") + struct.pack("<IQ", 10, 32)], ONE_F32, DATA),
    "dims_wrap_2^32x2^32": raw_gguf([ARCH], [("t", [2**32, 2**32], F32, 0)], DATA),
    "dim_2^63": raw_gguf([ARCH], [("t", [2**63, 1], F32, 0)], DATA),
    "dim_2^64-1": raw_gguf([ARCH], [("t", [2**64 - 1], F32, 0)], DATA),
    "dim_zero": raw_gguf([ARCH], [("t", [0, 8], F32, 0)], DATA),
    "five_dims": raw_gguf([ARCH], [("t", [1, 1, 1, 1, 8], F32, 0)], DATA),
    "nested_array_1000": raw_gguf([ARCH, _nested(1000)], ONE_F32, DATA),
    "nested_array_2": raw_gguf([ARCH, _nested(2)], ONE_F32, DATA),
    "unknown_tensor_type": raw_gguf([ARCH], [("t", [8], 99, 0)], DATA),
    "removed_type_q4_2": raw_gguf([ARCH], [("t", [32], 4, 0)], DATA),
    "offset_unaligned": raw_gguf([ARCH], [("t", [8], F32, 1)], DATA),
    "offset_gap": raw_gguf([ARCH], [("t", [8], F32, 32)], DATA),
    "tensors_overlap": raw_gguf([ARCH], [("a", [8], F32, 0), ("b", [8], F32, 0)], DATA),
    "tensor_past_end": raw_gguf([ARCH], [("t", [1024], F32, 0)], DATA),
    "duplicate_tensor": raw_gguf([ARCH], [("t", [8], F32, 0), ("t", [8], F32, 32)], DATA),
    "duplicate_key": raw_gguf([ARCH, kv_u32("k", 1), kv_u32("k", 2)], ONE_F32, DATA),
    "empty_key": raw_gguf([ARCH, kv_u32("", 1)], ONE_F32, DATA),
    "key_not_utf8": raw_gguf([ARCH, _s(b"\xff\xfe") + struct.pack("<II", 4, 1)], ONE_F32, DATA),
    "name_64_bytes": raw_gguf([ARCH], [("n" * 64, [8], F32, 0)], DATA),
    "string_len_2^62": raw_gguf([ARCH, _s("k") + struct.pack("<IQ", 8, 2**62)], ONE_F32, DATA),
    "array_count_2^40": raw_gguf([ARCH, _s("k") + struct.pack("<IIQ", 9, 4, 2**40)], ONE_F32, DATA),
    "string_array_count_2^40": raw_gguf([ARCH, _s("k") + struct.pack("<IIQ", 9, 8, 2**40)], ONE_F32, DATA),
    "n_kv_2^60": raw_gguf([ARCH], ONE_F32, DATA, n_kv=2**60),
    "n_tensors_2^60": raw_gguf([ARCH], ONE_F32, DATA, n_tensors=2**60),
    "unknown_value_type": raw_gguf([ARCH, _s("k") + struct.pack("<II", 13, 0)], ONE_F32, DATA),
    "q8_row_not_whole_blocks": raw_gguf([ARCH], [("t", [33], Q8_0, 0)], DATA),
    "version_1": b"GGUF" + struct.pack("<I", 1) + raw_gguf([ARCH], ONE_F32, DATA)[8:],
    "version_4": b"GGUF" + struct.pack("<I", 4) + raw_gguf([ARCH], ONE_F32, DATA)[8:],
    "truncated_header": raw_gguf([ARCH], ONE_F32, DATA)[:30],
    "empty_file": b"",
}


def _metadata_cases(seed: Path, out: Path) -> dict[str, Path]:
    """Well-formed files (written by gguf-py from the valid seed) whose metadata says something hostile."""
    reader = gguf.GGUFReader(seed)
    n_tokens = len(reader.fields["tokenizer.ggml.tokens"].data)
    cases: dict[str, dict] = {
        "block_count_0": {"add": {"llama.block_count": (0, V.UINT32)}},
        "block_count_1000": {"add": {"llama.block_count": (1000, V.UINT32)}},
        "block_count_string": {"add": {"llama.block_count": ("2", V.STRING)}},
        "head_count_0": {"add": {"llama.attention.head_count": (0, V.UINT32)}},
        "head_count_kv_not_divisor": {"add": {"llama.attention.head_count_kv": (3, V.UINT32)}},
        "embedding_not_divisible": {"add": {"llama.attention.head_count": (5, V.UINT32),
                                            "llama.attention.head_count_kv": (5, V.UINT32)}},
        "context_length_0": {"add": {"llama.context_length": (0, V.UINT32)}},
        "expert_count_2000": {"add": {"llama.expert_count": (2000, V.UINT32)}},
        "expert_used_over_count": {"add": {"llama.expert_count": (4, V.UINT32),
                                           "llama.expert_used_count": (8, V.UINT32)}},
        "scores_short": {"add": {"tokenizer.ggml.scores": (([0.0] * 3, V.FLOAT32), V.ARRAY)}},
        "token_type_float": {"add": {"tokenizer.ggml.token_type": (([1.0] * n_tokens, V.FLOAT32), V.ARRAY)}},
        "tokens_not_strings": {"add": {"tokenizer.ggml.tokens": (([1] * n_tokens, V.INT32), V.ARRAY)}},
        "bos_id_out_of_vocab": {"add": {"tokenizer.ggml.bos_token_id": (n_tokens, V.UINT32)}},
        "eos_id_2^32-1": {"add": {"tokenizer.ggml.eos_token_id": (2**32 - 1, V.UINT32)}},
        "add_bos_without_bos_id": {"drop": ("tokenizer.ggml.bos_token_id",),
                                   "add": {"tokenizer.ggml.add_bos_token": (True, V.BOOL)}},
        "architecture_missing": {"drop": ("general.architecture",), "add": {"general.architecture": ("", V.STRING)}},
        "chat_template_int": {"add": {"tokenizer.chat_template": (7, V.UINT32)}},
        "chat_template_syntax_error": {"add": {"tokenizer.chat_template": ("{% for %}", V.STRING)}},
        "chat_template_include": {"add": {"tokenizer.chat_template": ("{% include 'x' %}", V.STRING)}},
        "alignment_16": {"alignment": 16},
    }
    out.mkdir(parents=True, exist_ok=True)
    return {name: rewrite_gguf(seed, out / f"{name}.gguf", **kw) for name, kw in cases.items()}


@pytest.fixture(scope="module")
def corpus(seed_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf_corpus")
    files = {}
    for name, data in STRUCTURAL.items():
        files[name] = out / f"{name}.gguf"
        files[name].write_bytes(data)
    files.update(_metadata_cases(seed_gguf, out / "meta"))
    return files


def _load_check(path: Path) -> None:
    """What edgellm.load checks before llama.cpp sees a file."""
    from edgellm.runtimes.chat import check_template

    for template in validate_gguf(path)["chat_templates"].values():
        check_template(template)


def test_every_hostile_gguf_is_refused_with_a_typed_error(corpus: dict[str, Path]) -> None:
    accepted = []
    for name, path in corpus.items():
        if name == "alignment_16":
            continue   # spec-valid; llama.cpp's aligned-data rule decides (the tensor offsets stay 32-aligned or not)
        if classify("gguf corpus (hand-written)", name, lambda: _load_check(path)) == "accepted":
            accepted.append(name)
    assert_clean("gguf corpus (hand-written)")
    assert not accepted, f"hostile files accepted: {accepted}"
    assert len(corpus) >= 50


def test_errors_say_what_and_where(corpus: dict[str, Path]) -> None:
    with pytest.raises(ModelFormatError, match="general.alignment=1|not 32-byte aligned"):
        validate_gguf(corpus["alignment_1_unaligned_data"])
    with pytest.raises(ModelFormatError, match="dimension|elements"):
        validate_gguf(corpus["dims_wrap_2^32x2^32"])
    with pytest.raises(ModelFormatError, match="llama.block_count=1000"):
        validate_gguf(corpus["block_count_1000"])
    with pytest.raises(ChatTemplateError, match="include"):
        _load_check(corpus["chat_template_include"])


NATIVE_SAMPLE = ("alignment_1_unaligned_data", "dims_wrap_2^32x2^32", "nested_array_1000", "block_count_1000",
                 "head_count_0", "add_bos_without_bos_id", "chat_template_syntax_error", "scores_short", "alignment_16")


def test_hostile_ggufs_through_edgellm_load_in_child_processes(corpus: dict[str, Path]) -> None:
    """A sample of each kind through the real load path (the rest are refused by the same in-process check)."""
    native_loads("native load: gguf corpus", [corpus[name] for name in NATIVE_SAMPLE])
    assert_clean("native load: gguf corpus")


def test_info_never_prints_control_characters_from_a_file(seed_gguf: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from edgellm.cli import main

    path = rewrite_gguf(seed_gguf, tmp_path / "ansi.gguf",
                        add={"general.name": ("\x1b]0;pwned\x07\x1b[2J\rname", V.STRING)})
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\\x1b]0;pwned" in out and "\x1b" not in out and "\r" not in out
