"""edgellm: deploy large language models on the edge.

    model = edgellm.load("artifacts/smollm2-q4_k_m")
    for chunk in model.stream("Once upon a time", max_tokens=64):
        print(chunk.text, end="")
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load", "convert", "unpack", "plan", "resolve_device", "evaluate", "bench", "autoquant",
           "prune", "bundle", "serve", "Model", "Chunk", "GenerationResult", "Metrics", "CancelToken", "EdgeLLMError"]


def __getattr__(name: str) -> Any:  # lazy: importing edgellm does no work and loads no native library
    if name == "load":
        from .loading import load
        return load
    if name in ("convert", "unpack"):
        from . import converting
        return getattr(converting, name)
    if name in ("plan", "resolve_device"):
        from . import planning
        return getattr(planning, name)
    if name == "bundle":
        from .bundling import bundle
        return bundle
    if name == "serve":
        from .serving import serve
        return serve
    if name == "evaluate":
        from .evaluation import evaluate
        return evaluate
    if name == "bench":
        from .benchmark import bench
        return bench
    if name == "autoquant":
        from .quant_search import autoquant
        return autoquant
    if name == "prune":
        from .pruning import prune
        return prune
    if name in ("Model", "Chunk", "GenerationResult"):
        from . import model
        return getattr(model, name)
    if name == "CancelToken":
        from .cancellation import CancelToken
        return CancelToken
    if name == "Metrics":
        from .metrics import Metrics
        return Metrics
    if name == "EdgeLLMError" or (name.endswith("Error") and not name.startswith("_")):
        from . import errors  # every error class: `except edgellm.ContextOverflowError`
        if isinstance(getattr(errors, name, None), type):
            return getattr(errors, name)
    raise AttributeError(f"module 'edgellm' has no attribute {name!r}")
