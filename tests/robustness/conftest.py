"""Robustness suite fixtures: small valid seeds for every reader, and the end-of-run summary table."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.robustness.tally import summary_lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.section("edgellm robustness summary")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def seed_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny valid HF folder (1 layer, hidden 32) whose files seed the config/tokenizer/safetensors fuzzers."""
    from tests.fixtures.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("seed") / "hf", layers=1, hidden=32, heads=4, kv_heads=2,
                           ffn=32, vocab=320)


@pytest.fixture(scope="session")
def seed_gguf(seed_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny valid GGUF (Q8_0 weights, real BPE vocabulary, ChatML template) to mutate."""
    from edgellm.converters.gguf import convert_to_gguf

    return convert_to_gguf(seed_hf, tmp_path_factory.mktemp("seedgguf") / "a", "Q8_0").path


@pytest.fixture(scope="session")
def seed_tokenizer(seed_hf: Path) -> dict[str, Any]:
    return json.loads((seed_hf / "tokenizer.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def seed_onnx(seed_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny model as an ONNX artifact (fp32)."""
    import edgellm

    out = tmp_path_factory.mktemp("seedonnx") / "a"
    edgellm.convert(seed_hf, out, format="onnx", quant="fp32")
    return out


@pytest.fixture()
def fast_tmp(tmp_path: Path) -> Any:
    """A scratch folder in memory (/dev/shm) when the machine has one: the fuzzers rewrite files thousands of
    times, and a disk-backed temp folder can make that take longer than the work itself."""
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="edgellm-fuzz-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
