"""Model facts from any source edgellm plans for: a GGUF file, an HF folder (its converted artifacts predicted
tensor by tensor), an ONNX graph (edgellm's or onnxruntime-genai's), or an artifact folder with a manifest.
Only headers and graphs are read, never weights. `devices/` receives the plain `ModelFacts` this returns."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .converters.manifest import MANIFEST_NAME
from .devices.onnx_facts import onnx_read_bytes, onnx_recipe
from .devices.types import ModelFacts, TensorFacts
from .errors import ArtifactError, ModelFormatError

log = logging.getLogger(__name__)


# --- model facts --------------------------------------------------------------------------------------
def facts_from_gguf(path: str | Path) -> ModelFacts:
    from .converters.gguf_reading import field_value, open_gguf
    from .converters.quant_plan import gguf_memory_facts

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
        num_kv_heads=_max_int(key("attention.head_count_kv", n_heads)),   # per-layer in hybrids (LFM2: 0 = conv)
        head_dim=int(key("attention.key_length", 0) or hidden // n_heads),   # rope dims may be fewer (Phi-4-mini)
        vocab_size=int(vocab), max_context=int(key("context_length", 2048)),
        tie_word_embeddings=not any(t.name == "output.weight" for t in tensors),
        tensors=tensors, source="gguf", quant=_gguf_quant_name(file_type, tensors), file_bytes=p.stat().st_size,
        **gguf_memory_facts(key, int(key("block_count")), hidden, arch))


def _max_int(value: Any) -> int:
    return max((int(v) for v in value), default=0) if hasattr(value, "__len__") else int(value)


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
    """Facts of an HF folder, with the artifacts it converts to predicted tensor by tensor.

    The family registry decides what is supported (UnsupportedArchitectureError otherwise, as convert raises);
    the GGUF tensor list and each GGUF quant's per-tensor types come from the converter's own rules and
    llama.cpp's quantizer rules (converters/quant_plan.py), so a plan from the folder sizes the same file the
    converted artifact's plan reads. Only headers are read."""
    from .converters.hf import read_hf_model
    from .converters.imatrix import resolve_imatrix
    from .converters.quant_plan import gguf_header_bytes, gguf_layout, memory_facts
    from .devices.planner import QUANT_LADDER

    layout = gguf_layout(path)   # refuses an unsupported architecture with the supported list
    with read_hf_model(path) as model:
        c = model.config
        tensors = tuple(TensorFacts(name, tuple(info.shape), info.dtype)
                        for name, info in model.tensor_infos().items())
    quants = dict.fromkeys([o.name for o in QUANT_LADDER if o.format == "gguf"] + _profile_gguf_quants())
    # convert's default importance matrix (every folder not unpacked from a GGUF) changes a few of llama.cpp's types
    imatrix = resolve_imatrix(path, None) is True
    layouts = tuple((q, tuple(TensorFacts(t.name, t.shape, t.type) for t in layout.types(q, imatrix=imatrix)))
                    for q in quants)
    mem = memory_facts(layout.args)
    a = layout.args
    return ModelFacts(architecture=c.architecture, num_layers=c.num_layers, hidden_size=c.hidden_size,
                      intermediate_size=a.ffn, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
                      head_dim=c.head_dim, vocab_size=c.vocab_size, max_context=c.max_position_embeddings,
                      tie_word_embeddings=a.tied, tensors=tensors, source="hf",
                      layer_kv_heads=mem.layer_kv_heads, sliding_window=mem.sliding_window, swa_layers=mem.swa_layers,
                      recurrent_state_bytes=mem.recurrent_state_bytes, layouts=layouts,
                      header_bytes=gguf_header_bytes(path, len(layout.tensors)), refused_formats=layout.refusals,
                      tokenizer_entries=_tokenizer_entries(Path(path) / "tokenizer.json"))


def _profile_gguf_quants() -> list[str]:
    from .converters.gguf_types import QUANT_TYPES
    from .devices.profiles import load_profiles

    names = [p.quant.upper() for prof in load_profiles().values() for p in prof.preferred if p.format == "gguf"]
    return [n for n in names if n in QUANT_TYPES and not QUANT_TYPES[n].needs_imatrix]


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
    decoder = _json_or_empty(p.parent / "genai_config.json").get("model", {})  # genai builders' graphs
    dec = decoder.get("decoder", {}) if isinstance(decoder, dict) else {}
    kv_heads = dims[1] if len(dims) == 4 and dims[1] else int(dec.get("num_key_value_heads", 0))
    head_dim = dims[3] if len(dims) == 4 and dims[3] else int(dec.get("head_size", 0))
    embed = next((i for i in model.graph.initializer if "embed" in i.name), None)
    quantized_table = any(n.op_type == "GatherBlockQuantized" for n in model.graph.node)
    vocab, hidden = (tuple(embed.dims)[:2] if embed is not None and len(embed.dims) == 2
                     else (int(decoder.get("vocab_size", 0)), int(dec.get("hidden_size", 0))))
    if not (kv_heads and head_dim and hidden and vocab):
        raise ModelFormatError(f"{p}: cannot tell the model's shape (kv heads {kv_heads}, head dim {head_dim}, "
                               f"hidden {hidden}, vocab {vocab}) from the graph or genai_config.json")
    files = [p] + [p.parent / f for f in {e.value for i in model.graph.initializer for e in i.external_data
                                           if e.key == "location"}]
    config = _json_or_empty(p.parent / "config.json")
    heads = int(config.get("num_attention_heads", dec.get("num_attention_heads") or hidden // head_dim))
    arch = str(config.get("model_type") or decoder.get("type") or "llama")
    return ModelFacts(
        architecture=arch, num_layers=len(past), hidden_size=int(hidden),
        intermediate_size=int(config.get("intermediate_size") or _onnx_ffn_width(model) or 4 * hidden), num_heads=heads,
        num_kv_heads=int(kv_heads), head_dim=int(head_dim), vocab_size=int(vocab),
        max_context=int(context_length or config.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)), source="onnx", quant=quant,
        file_bytes=sum(f.stat().st_size for f in files if f.is_file()),
        embedding_bytes=0 if quantized_table else None, decode_read_bytes=onnx_read_bytes(model),
        tokenizer_entries=_tokenizer_entries(p.parent / "tokenizer.json"))


def _tokenizer_entries(path: Path) -> int | None:
    """Vocabulary + added tokens of a tokenizer.json (what the runtime's tokenizer holds), None if unreadable."""
    doc = _json_or_empty(path)
    model = doc.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, (dict, list)) or not vocab:
        return None
    added = doc.get("added_tokens")
    extra = [t for t in added if isinstance(t, dict) and t.get("content") not in vocab] \
        if isinstance(added, list) and isinstance(vocab, dict) else []
    return len(vocab) + len(extra)


def genai_decoder(folder: Path) -> Path:
    """The decoder of an onnxruntime-genai output folder (genai_config.json + model.onnx + tokenizer files),
    checked for what edgellm's onnxruntime runtime needs to run it; ArtifactError naming what is missing."""
    doc = _json_or_empty(folder / "genai_config.json")
    dec = doc.get("model", {}).get("decoder", {}) if isinstance(doc.get("model"), dict) else {}
    name = dec.get("filename") if isinstance(dec, dict) else None
    if not isinstance(name, str) or not name.endswith(".onnx"):
        raise ArtifactError(f"{folder / 'genai_config.json'}: model.decoder.filename names no .onnx file",
                            "this is not an onnxruntime-genai decoder folder")
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()) or not path.is_file():
        raise ArtifactError(f"{folder}: the decoder {name!r} named by genai_config.json is missing")
    if not (folder / "tokenizer.json").is_file():
        raise ArtifactError(f"{folder} has no tokenizer.json, which edgellm's onnxruntime runtime needs",
                            "copy the model's tokenizer.json beside genai_config.json")
    return path


def _onnx_ffn_width(model: Any) -> int:
    """The MLP width from the first down_proj: MatMulNBits' K attribute, or a MatMul weight's rows (0 if none)."""
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if "down_proj" not in node.name:
            continue
        if node.op_type == "MatMulNBits":
            return next((int(a.i) for a in node.attribute if a.name == "K"), 0)
        if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in inits:
            return int(inits[node.input[1]].dims[0])
    return 0


def _json_or_empty(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing, unreadable, not an object or nested too deeply for
    Python's parser (a hostile file: RecursionError)."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def read_model_facts(model: str | Path) -> ModelFacts:
    """Facts of an HF folder, a .gguf/.onnx file, or an artifact folder holding edgellm.json."""
    p = Path(model)
    if p.is_file():
        if p.suffix == ".gguf":
            return facts_from_gguf(p)
        if p.suffix == ".onnx":
            return _facts_from_onnx_file(p)
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
    if (p / "genai_config.json").is_file():   # onnxruntime-genai's builder output (no edgellm.json)
        return _facts_from_onnx_file(genai_decoder(p))
    if (p / "config.json").is_file():
        return facts_from_hf(p)
    raise ArtifactError(f"{p} holds neither {MANIFEST_NAME}, genai_config.json nor config.json",
                        "pass an HF folder, an edgellm artifact, an onnxruntime-genai folder or a .gguf/.onnx file")


def _facts_from_onnx_file(path: Path) -> ModelFacts:
    """An ONNX decoder without an edgellm manifest: the recipe read from the graph, the context from
    genai_config.json when there is one."""
    import onnx

    try:
        quant = onnx_recipe(onnx.load(str(path), load_external_data=False))
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ModelFormatError(f"{path}: cannot parse ONNX ({exc})") from None
    ctx = _json_or_empty(path.parent / "genai_config.json").get("model", {})
    context = ctx.get("context_length") if isinstance(ctx, dict) else None
    return facts_from_onnx(path, quant, int(context) if isinstance(context, int) and context > 0 else None)


def _gguf_file(p: Path) -> Path | None:
    if p.is_file() and p.suffix == ".gguf":
        return p
    if (p / MANIFEST_NAME).is_file():
        file = _json_or_empty(p / MANIFEST_NAME).get("file")
        if isinstance(file, str) and file.endswith(".gguf") and (p / file).resolve().is_relative_to(p.resolve()):
            return p / file
    return None
