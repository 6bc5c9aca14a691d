"""Planning façade: read model facts from any source, resolve a device spec, and call devices.planner.

This is the one place that wires converters' readers to the devices room: `devices/` gets plain data.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from .devices.budgets import parse_memory, parse_quality_loss, parse_speed
from .devices.cpu import detect_cpu
from .devices.cuda import detect_cuda
from .devices.planner import Plan, plan_model
from .devices.profiles import get_profile
from .devices.threads import ThreadChoice, pick_threads
from .devices.types import CUDAInventory, Device, ModelFacts, TensorFacts
from .errors import ArtifactError, DeviceError, ModelFormatError

log = logging.getLogger(__name__)

MANIFEST_NAME = "edgellm.json"


# --- model facts --------------------------------------------------------------------------------------
def facts_from_gguf(path: str | Path) -> ModelFacts:
    from .converters.gguf_reading import field_value, open_gguf

    p = Path(path)
    reader = open_gguf(p)
    arch = str(field_value(reader, "general.architecture", "llama"))

    def key(name: str, default: Any = None) -> Any:
        return field_value(reader, f"{arch}.{name}", default)

    n_heads = int(key("attention.head_count", 0) or 0)
    hidden = int(key("embedding_length", 0) or 0)
    if not (n_heads and hidden and key("block_count")):
        raise ModelFormatError(f"{p}: GGUF lacks {arch}.block_count/embedding_length/attention.head_count")
    tensors = tuple(TensorFacts(t.name, tuple(int(d) for d in t.shape), t.tensor_type.name) for t in reader.tensors)
    vocab = key("vocab_size") or next((t.shape[1] for t in tensors if t.name == "token_embd.weight"), 0)
    file_type = field_value(reader, "general.file_type")
    return ModelFacts(
        architecture=arch, num_layers=int(key("block_count")), hidden_size=hidden,
        intermediate_size=int(key("feed_forward_length", 4 * hidden)), num_heads=n_heads,
        num_kv_heads=int(key("attention.head_count_kv", n_heads)),
        head_dim=int(key("attention.key_length", 0) or key("rope.dimension_count", 0) or hidden // n_heads),
        vocab_size=int(vocab), max_context=int(key("context_length", 2048)),
        tie_word_embeddings=not any(t.name == "output.weight" for t in tensors),
        tensors=tensors, source="gguf", quant=_gguf_quant_name(file_type, tensors), file_bytes=p.stat().st_size)


def _gguf_quant_name(file_type: Any, tensors: tuple[TensorFacts, ...]) -> str:
    try:
        import gguf

        return gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
    except (TypeError, ValueError, ImportError):
        counts: dict[str, int] = {}
        for t in tensors:
            if len(t.shape) > 1:
                counts[t.dtype] = counts.get(t.dtype, 0) + 1
        return max(counts, key=counts.__getitem__) if counts else "unknown"


def facts_from_hf(path: str | Path) -> ModelFacts:
    from .converters.hf import read_hf_model

    with read_hf_model(path) as model:
        c = model.config
        tensors = tuple(TensorFacts(name, tuple(info.shape), info.dtype)
                        for name, info in model.tensor_infos().items())
    return ModelFacts(architecture=c.architecture, num_layers=c.num_layers, hidden_size=c.hidden_size,
                      intermediate_size=c.intermediate_size, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
                      head_dim=c.head_dim, vocab_size=c.vocab_size, max_context=c.max_position_embeddings,
                      tie_word_embeddings=c.tie_word_embeddings, tensors=tensors, source="hf")


def facts_from_onnx(path: str | Path, quant: str = "int4", context_length: int | None = None) -> ModelFacts:
    """Facts from an ONNX decoder: layers/heads from its past-KV inputs, sizes from its initializers."""
    import onnx

    p = Path(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ModelFormatError(f"{p}: cannot parse ONNX ({exc})") from None
    past = [i for i in model.graph.input if i.name.startswith("past_key_values.") and i.name.endswith(".key")]
    if not past:
        raise ModelFormatError(f"{p}: no past_key_values.N.key inputs; not an edgellm/genai-style decoder")
    dims = [d.dim_value for d in past[0].type.tensor_type.shape.dim]  # (batch, kv_heads, seq, head_dim)
    kv_heads, head_dim = dims[1], dims[3]
    embed = next((i for i in model.graph.initializer if "embed" in i.name), None)
    vocab, hidden = (tuple(embed.dims)[:2] if embed is not None else (0, 0))
    files = [p] + [p.parent / f for f in {e.value for i in model.graph.initializer for e in i.external_data
                                           if e.key == "location"}]
    config = _json_or_empty(p.parent / "config.json")
    heads = int(config.get("num_attention_heads", hidden // head_dim if head_dim else 0))
    return ModelFacts(
        architecture=str(config.get("model_type", "llama")), num_layers=len(past), hidden_size=int(hidden),
        intermediate_size=int(config.get("intermediate_size", 4 * hidden)), num_heads=heads,
        num_kv_heads=int(kv_heads), head_dim=int(head_dim), vocab_size=int(vocab),
        max_context=int(context_length or config.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)), source="onnx", quant=quant,
        file_bytes=sum(f.stat().st_size for f in files if f.is_file()))


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def read_model_facts(model: str | Path) -> ModelFacts:
    """Facts of an HF folder, a .gguf/.onnx file, or an artifact folder holding edgellm.json."""
    p = Path(model)
    if p.is_file():
        if p.suffix == ".gguf":
            return facts_from_gguf(p)
        if p.suffix == ".onnx":
            return facts_from_onnx(p)
        raise ArtifactError(f"{p}: expected a .gguf or .onnx file")
    if not p.is_dir():
        raise ArtifactError(f"{p} does not exist")
    if (p / MANIFEST_NAME).is_file():
        manifest = _json_or_empty(p / MANIFEST_NAME)
        file = manifest.get("file")
        if not isinstance(file, str) or not (p / file).resolve().is_relative_to(p.resolve()):
            raise ArtifactError(f"{p / MANIFEST_NAME}: field 'file' is missing or leaves the folder")
        if manifest.get("format") == "onnx":
            return facts_from_onnx(p / file, str(manifest.get("quant", "int4")), manifest.get("context_length"))
        return facts_from_gguf(p / file)
    if (p / "config.json").is_file():
        return facts_from_hf(p)
    raise ArtifactError(f"{p} holds neither {MANIFEST_NAME} nor config.json")
