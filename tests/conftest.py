"""Shared fixtures: tiny random models (seconds) and the real SmolLM2 (cached across runs)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pytest

from tests.fixtures import smollm2, tiny

if TYPE_CHECKING:
    from edgellm.model import Model
    from tests.fakes import FakeRuntime


@pytest.fixture(scope="session")
def smollm2_wheel_gguf() -> Path:
    return smollm2.wheel_gguf()


@pytest.fixture(scope="session")
def smollm2_hf() -> Path:
    """The rebuilt HF folder of SmolLM2-135M-Instruct."""
    return smollm2.smollm2_hf_dir()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Callable[[str], Path]:
    """Factory: quant name ("F16", "Q8_0", "Q4_K_M", ...) -> path of the cached GGUF file."""
    return smollm2.smollm2_gguf


@pytest.fixture(scope="session")
def smollm2_artifact() -> Callable[[str], Path]:
    """Factory: quant name -> cached artifact folder (GGUF + edgellm.json)."""
    return smollm2.smollm2_gguf_dir


@pytest.fixture(scope="session")
def smollm2_onnx() -> Callable[[str], Path]:
    """Factory: ONNX recipe ("int4", "int8", "fp32", ...) -> cached ONNX artifact folder of SmolLM2."""
    from edgellm.default_model import default_artifact

    return lambda quant: default_artifact(quant, format="onnx")


@pytest.fixture(scope="session")
def smollm2_onnx_int4(smollm2_onnx: Callable[[str], Path]) -> Path:
    return smollm2_onnx("int4")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory building tiny random HF folders, cached per argument set for the session."""
    cache: dict[tuple, Path] = {}

    def make(arch: str = "LlamaForCausalLM", **kwargs: object) -> Path:
        key = (arch, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in cache:
            folder = tmp_path_factory.mktemp(arch.lower())
            cache[key] = tiny.make_tiny_model(folder / "model", arch, **kwargs)  # type: ignore[arg-type]  # kwargs come from the fixture's own typed call sites
        return cache[key]

    return make


@pytest.fixture
def fake_runtime() -> Callable[..., "FakeRuntime"]:
    """Factory: scripted pieces (bytes per token, or fakes.EOS) -> a FakeRuntime, the test double of the runtime
    interface (tests/fakes.py says why it exists). Runs Model's generation loop in milliseconds."""
    from tests.fakes import FakeRuntime

    return FakeRuntime


@pytest.fixture
def fake_model(fake_runtime: Callable[..., "FakeRuntime"]) -> Callable[..., "Model"]:
    """Factory: the same arguments as FakeRuntime -> an edgellm Model over it (model.runtime is the fake)."""
    from tests.fakes import model_over

    return lambda *pieces_and_options, **kwargs: model_over(fake_runtime(*pieces_and_options, **kwargs))
