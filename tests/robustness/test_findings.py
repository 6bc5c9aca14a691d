"""One regression test per finding of the attack that opened issue 11 (numbered as in the issue)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgellm
from edgellm.cli import main as cli
from edgellm.converters.gguf_checks import validate_gguf
from edgellm.errors import (BundleError, ChatTemplateError, ConfigError, EdgeLLMError, GenerationError,
                            InvalidInputError, ModelClosedError, ModelFormatError, OptionError, OutputPathError,
                            TokenizerError, UnsafePathError)
from edgellm.runtimes.base import LoadOptions, SamplingParams
from edgellm.runtimes.chat import render_chat
from tests.robustness.native import ROOT
from tests.robustness.test_faults import _run_limited
from tests.robustness.test_gguf_corpus import STRUCTURAL
from tests.robustness.test_hf_corpus import CASES
from tests.robustness.test_runtime_values import THREADS_CHILD
from tests.robustness.test_templates import PAYLOADS


def _corpus_folder(seed_hf: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(seed_hf, folder)
    CASES[name](folder)
    return folder


def test_finding_01_two_threads_streaming_one_llama_model_do_not_abort(seed_gguf: Path) -> None:
    p = subprocess.run([sys.executable, "-c", THREADS_CHILD, str(seed_gguf)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-500:]


def test_finding_02_alignment_and_wrapping_dimensions_are_refused(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("alignment_1_unaligned_data", "alignment_0", "alignment_string", "alignment_array",
                 "dims_wrap_2^32x2^32", "nested_array_1000"):
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(STRUCTURAL[name])
        with pytest.raises(ModelFormatError):
            validate_gguf(path)
        assert cli(["info", str(path)]) == 1
        assert "hint:" in capsys.readouterr().err


def test_finding_03_load_refuses_what_the_validator_rejects(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(STRUCTURAL["alignment_1_unaligned_data"])
    with pytest.raises(ModelFormatError, match="aligned"):
        edgellm.load(path, device="cpu")


def test_finding_04_huge_layer_counts_and_token_ids_are_refused_quickly(seed_hf: Path, tmp_path: Path) -> None:
    for name, error in (("layers_2^31", ConfigError), ("layers_10^30", ConfigError),
                        ("added_token_id_1e6", TokenizerError)):
        t0 = time.perf_counter()
        with pytest.raises(error):
            edgellm.convert(_corpus_folder(seed_hf, tmp_path, name), tmp_path / f"o-{name}", format="gguf", quant="F32")
        assert time.perf_counter() - t0 < 2.0


def test_finding_05_hostile_config_and_header_values_are_typed(seed_hf: Path, tmp_path: Path) -> None:
    for name in ("config_deep_nest", "hidden_1e400", "heads_0", "rope_scaling_list", "config_not_utf8", "vocab_2^40",
                 "st_header_deep", "st_shape_1e400"):
        with pytest.raises((ConfigError, ModelFormatError)):
            edgellm.convert(_corpus_folder(seed_hf, tmp_path, name), tmp_path / f"o-{name}", format="gguf", quant="F32")


def test_finding_06_template_dos_include_and_broken_gguf_templates_are_typed(seed_gguf: Path, tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    for name in ("nested_range_loops", "string_doubling_concat", "strftime_huge", "include", "range_huge",
                 "recursive_macro", "exponential_macro"):
        t0 = time.perf_counter()
        with pytest.raises(ChatTemplateError):
            render_chat(PAYLOADS[name], msgs)
        assert time.perf_counter() - t0 < 2.0, name
    with pytest.raises(ChatTemplateError):
        render_chat("{{ strftime_now('%Y' * 2e8) }}", msgs)
    import gguf

    from tests.robustness.gguf_seed import rewrite_gguf
    broken = rewrite_gguf(seed_gguf, tmp_path / "broken.gguf",
                          add={"tokenizer.chat_template": ("{% for %}", gguf.GGUFValueType.STRING)})
    with pytest.raises(ChatTemplateError):
        edgellm.load(broken, device="cpu")


def test_finding_07_a_malformed_tokenizer_in_an_onnx_artifact_is_typed(seed_onnx: Path, tmp_path: Path) -> None:
    for i, text in enumerate(['{"model": {"type": "BPE", "vocab": 5}}', "{", "[1]", '{"model": "x"}']):
        folder = tmp_path / f"o{i}"
        shutil.copytree(seed_onnx, folder)
        (folder / "tokenizer.json").write_text(text)
        with pytest.raises(TokenizerError):
            edgellm.load(folder / "model.onnx", device="cpu")


def test_finding_08_full_disk_is_typed_and_stale_partials_are_removed(seed_hf: Path, tmp_path: Path) -> None:
    assert _run_limited(seed_hf, tmp_path / "full", "gguf", "F32", 20000, ignore_signal=True) == 3
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.gguf.partial").write_bytes(b"x" * 100)
    (tmp_path / ".out.partial-abc123").mkdir()
    (tmp_path / ".out.partial-abc123" / "model.onnx").write_bytes(b"x")
    edgellm.convert(seed_hf, out, format="gguf", quant="F32")
    assert not (out / "model.gguf.partial").exists() and not (tmp_path / ".out.partial-abc123").exists()


def test_finding_09_bundle_files_output_in_source_and_symlinks(seed_hf: Path, seed_gguf: Path, seed_onnx: Path,
                                                               tmp_path: Path) -> None:
    bundle = tmp_path / "b.bundle"
    shutil.copytree(seed_gguf.parent, bundle / "variants" / "v")
    (bundle / "bundle.json").write_text(json.dumps({"variants": {"v": {"format": "gguf", "folder": "variants/v",
                                                                       "files": {}}}, "targets": {}}))
    with pytest.raises(BundleError, match="lists no files"):
        edgellm.load(bundle, device="cpu")
    src = tmp_path / "src"
    shutil.copytree(seed_hf, src)
    before = (src / "tokenizer_config.json").read_bytes()
    with pytest.raises(OutputPathError):
        edgellm.convert(src, src, format="onnx", quant="fp32")
    assert (src / "tokenizer_config.json").read_bytes() == before
    art = tmp_path / "art"
    shutil.copytree(seed_onnx, art)
    (art / "tokenizer.json").unlink()
    (art / "tokenizer.json").symlink_to(seed_onnx / "tokenizer.json")
    with pytest.raises(UnsafePathError):
        edgellm.load(art / "model.onnx", device="cpu")


def test_finding_10_runtime_values_are_typed_the_same_on_both_runtimes(seed_gguf: Path, seed_onnx: Path) -> None:
    for path in (seed_gguf, seed_onnx):
        model = edgellm.load(path, device="cpu", n_ctx=64, threads=1)
        for ids in ([-1], [10**9]):
            with pytest.raises(InvalidInputError):
                model.generate(ids, max_tokens=2)
        with pytest.raises(InvalidInputError):
            model.generate("a\udc80b", max_tokens=2)
        for bad in (math.nan, math.inf):
            with pytest.raises(GenerationError):
                model.generate("hi", max_tokens=2, temperature=bad)
        assert model.generate("hi", max_tokens=2, seed=-1).finish_reason in ("length", "stop")
        free = model.generate("hi", max_tokens=4, temperature=0).text
        assert model.generate("hi", max_tokens=4, temperature=0, stop=[""]).text == free
        for threads in (0, -1):
            with pytest.raises(EdgeLLMError):
                edgellm.load(path, device="cpu", threads=threads)
        model.close()
        with pytest.raises(ModelClosedError):
            model.generate("hi")
    assert SamplingParams(stop="ab").stop == ("ab",)
    with pytest.raises(OptionError):
        LoadOptions(n_ctx=0)
