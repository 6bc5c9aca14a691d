"""The runtime versions an artifact needs, computed from the artifact itself, and the check a target must pass.

    reqs = edgellm.edge_requirements.requirements_for("artifacts/smollm2-onnx-int4")
    problems = check_runtime(reqs, {"onnxruntime": "1.22.0"})   # -> ["onnxruntime 1.22.0 < 1.23: ..."]

An ONNX graph needs the onnxruntime that implements its default-domain opset, its IR version and each
contrib (com.microsoft) op it uses, with the attributes it sets: GatherBlockQuantized gained its `bits`
attribute in onnxruntime 1.23, and 1.22 refuses a graph that sets it. A GGUF needs a llama.cpp that knows its
tensor types and architecture. Every fact is a row of data below, naming where it comes from; an op the tables
do not know needs the onnxruntime that built and tested the artifact (the host's), which is never wrong, only
sometimes stricter than it must be.
"""
from __future__ import annotations

import importlib.metadata
import logging
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from .devices.types import Device, ModelFacts
from .errors import ArtifactError, BackendUnavailableError

log = logging.getLogger(__name__)

Version = tuple[int, ...]

# onnxruntime release -> highest default-domain opset and IR version it implements
# (onnxruntime.ai/docs/reference/compatibility.html, "ONNX opset support"). Rows newest first.
ORT_OPSET: tuple[tuple[str, int, int], ...] = (
    ("1.23", 23, 11), ("1.21", 22, 10), ("1.18", 21, 10), ("1.17", 20, 9), ("1.15", 19, 9),
    ("1.14", 18, 8), ("1.13", 17, 8), ("1.11", 16, 8), ("1.10", 15, 8),
)


@dataclass(frozen=True)
class ContribRule:
    """A com.microsoft op (and optionally one attribute of it) and the first onnxruntime with a CPU kernel."""
    op: str
    min_version: str
    attribute: str | None = None
    source: str = ""


# Contrib ops edgellm's ONNX converter emits (converters/onnx_graph.py, onnx_ops.py); CPU kernels.
CONTRIB_RULES: tuple[ContribRule, ...] = (
    ContribRule("MatMulNBits", "1.17", source="contrib op added in 1.17 (int4 MatMul, accuracy_level)"),
    ContribRule("GatherBlockQuantized", "1.20", source="contrib op added in 1.20"),
    ContribRule("GatherBlockQuantized", "1.23", "bits",
                source="the `bits` attribute is new in 1.23: 1.22.0 and 1.20.1 refuse the graph with "
                       "'Unrecognized attribute: bits for operator GatherBlockQuantized' (checked, x86-64)"),
    ContribRule("GroupQueryAttention", "1.17", source="CPU kernel added in 1.17"),
    ContribRule("RotaryEmbedding", "1.17", source="CPU kernel added in 1.17"),
    ContribRule("SkipSimplifiedLayerNormalization", "1.16", source="CPU kernel added in 1.16"),
    ContribRule("SimplifiedLayerNormalization", "1.14", source="registered by onnxruntime in the default domain"),
)


@dataclass(frozen=True)
class KernelRule:
    """A default-domain op on one input element type and the first onnxruntime with a CPU kernel for it."""
    op: str
    dtype: str                 # onnx.TensorProto name of input 0's element type, e.g. "DOUBLE"
    min_version: str
    source: str = ""


# Checked by loading an int4 graph whose rope angles were computed in float64 (edgellm's before its rope tables went
# float32-only) in each onnxruntime release (x86-64): 1.23.2 ... 1.28.0 fail with "Could not find an implementation
# for Cos(7)", 1.29.0, 1.30.0, 1.31.1, 1.32.0 load. Kept for any graph that takes Cos/Sin of doubles.
KERNEL_RULES: tuple[KernelRule, ...] = (
    KernelRule("Cos", "DOUBLE", "1.29", "no float64 CPU kernel before 1.29 (1.28.0 refuses the graph)"),
    KernelRule("Sin", "DOUBLE", "1.29", "no float64 CPU kernel before 1.29 (1.28.0 refuses the graph)"),
)

# GGML tensor type -> first llama-cpp-python release whose llama.cpp reads it (GGUF arrived in 0.1.79/0.2.0).
GGML_TYPE_MIN: dict[str, str] = {
    **{t: "0.2.0" for t in ("F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                            "Q6_K", "Q8_K")},
    **{t: "0.2.57" for t in ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS")},
    "BF16": "0.2.70",
}

# llama.cpp features worth knowing on the target, read from the GGUF's tensor types (planning facts, not gates).
GGUF_FEATURES: dict[str, str] = {
    "Q4_0": "arm-repack-q4_0: llama.cpp repacks Q4_0 at load into interleaved layouts for Arm dotprod/i8mm "
            "(the extra buffer type; a memory copy of those tensors at load)",
    "Q8_0": "arm-repack-q8_0: repacked for Arm dotprod/i8mm at load",
    "IQ4_NL": "arm-repack-iq4_nl: repacked for Arm dotprod at load",
}


def parse_version(text: str) -> Version:
    """'1.23.2' -> (1, 23, 2); '1.24.0.dev1+cu' -> (1, 24, 0)."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    if m is None:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in m.group(1).split("."))


def _max_version(versions: Iterable[str]) -> str:
    return max(versions, key=parse_version)


@dataclass(frozen=True)
class Requirement:
    """One runtime's minimum version for one artifact, with the reasons (the facts that set it)."""
    runtime: str                          # distribution name: "onnxruntime" | "llama-cpp-python"
    min_version: str
    reasons: tuple[str, ...] = ()
    features: tuple[str, ...] = ()        # facts for the planner, not gates

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ArtifactRequirements:
    format: str
    requirements: tuple[Requirement, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "runtimes": [r.to_dict() for r in self.requirements]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtifactRequirements:
        try:
            reqs = tuple(Requirement(str(r["runtime"]), str(r["min_version"]), tuple(r.get("reasons", ())),
                                     tuple(r.get("features", ()))) for r in data["runtimes"])
            return cls(str(data["format"]), reqs)
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"malformed runtime requirements ({exc})") from None


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- ONNX ----------------------------------------------------------------------------------------------------------
def onnx_requirement(model_path: Path, *, fallback_version: str | None = None) -> Requirement:
    """The onnxruntime an ONNX graph needs: opset, IR version and contrib ops (graph only; weights not read)."""
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailableError(f"onnx is not importable ({exc})", "pip install 'edgellm[onnx]'") from None
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...
        raise ArtifactError(f"cannot read the ONNX graph {model_path}: {exc}") from None
    fallback = fallback_version or installed_version("onnxruntime") or ORT_OPSET[0][0]
    found: dict[str, str] = {}   # reason -> version
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    found.update(_opset_need(opset, model.ir_version, fallback))
    ops: dict[str, set[str]] = {}
    for node in _all_nodes(model.graph):
        if node.domain == "com.microsoft":
            ops.setdefault(node.op_type, set()).update(a.name for a in node.attribute)
    for op, attrs in sorted(ops.items()):
        rules = [r for r in CONTRIB_RULES if r.op == op and (r.attribute is None or r.attribute in attrs)]
        if not rules:
            found[f"contrib op {op} is not in edgellm's table: needs the onnxruntime it was tested with"] = fallback
        for r in rules:
            what = f"com.microsoft {op}" + (f" with attribute {r.attribute}" if r.attribute else "")
            found[f"{what} needs onnxruntime >= {r.min_version} ({r.source})"] = r.min_version
    found.update(_kernel_needs(model))
    need = _max_version(found.values())
    reasons = tuple(sorted(found, key=lambda k: parse_version(found[k]), reverse=True))
    return Requirement("onnxruntime", need, reasons)


def _kernel_needs(model: Any) -> dict[str, str]:
    """KERNEL_RULES matched against the element type of each rule op's first input (shape inference)."""
    import onnx

    ops = {r.op for r in KERNEL_RULES}
    nodes = [n for n in _all_nodes(model.graph) if n.domain in ("", "ai.onnx") and n.op_type in ops]
    if not nodes:
        return {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 - an uninferable graph: say so, no kernel facts
        log.info("shape inference failed (%s); element-type kernel rules not applied", exc)
        return {}
    elem = {v.name: v.type.tensor_type.elem_type for v in
            (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    elem.update({t.name: t.data_type for t in inferred.graph.initializer})
    out: dict[str, str] = {}
    for node in nodes:
        dtype = onnx.TensorProto.DataType.Name(elem.get(node.input[0], 0)) if node.input else "UNDEFINED"
        for r in KERNEL_RULES:
            if r.op == node.op_type and r.dtype == dtype:
                out[f"{node.op_type} on {dtype.lower()} needs onnxruntime >= {r.min_version} ({r.source})"] = \
                    r.min_version
    return out


def _opset_need(opset: int, ir_version: int, fallback: str) -> dict[str, str]:
    out: dict[str, str] = {}
    opset_rows = [v for v, o, _ in ORT_OPSET if o >= opset]
    ir_rows = [v for v, _, ir in ORT_OPSET if ir >= ir_version]
    out[f"default-domain opset {opset} needs onnxruntime >= {min(opset_rows, key=parse_version, default=fallback)}"] = \
        min(opset_rows, key=parse_version, default=fallback)
    out[f"IR version {ir_version} needs onnxruntime >= {min(ir_rows, key=parse_version, default=fallback)}"] = \
        min(ir_rows, key=parse_version, default=fallback)
    return out


def _all_nodes(graph: Any) -> Iterable[Any]:
    """Every node, subgraphs (If/Loop/Scan bodies) included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


# -- GGUF ----------------------------------------------------------------------------------------------------------
def gguf_requirement(gguf_path: Path, *, fallback_version: str | None = None) -> Requirement:
    """The llama-cpp-python (llama.cpp) a GGUF needs: its tensor types; plus the Arm features it will meet."""
    from .runtimes.llama_native import gguf_tensor_types

    return gguf_types_requirement(gguf_tensor_types(gguf_path), fallback_version=fallback_version)


def gguf_types_requirement(tensor_types: Iterable[str], *, fallback_version: str | None = None) -> Requirement:
    """The llama-cpp-python a GGUF holding these GGML tensor types needs (a converted file's, or the types the
    planner predicts for a quant before converting)."""
    types = sorted(set(tensor_types))
    fallback = fallback_version or installed_version("llama-cpp-python") or "0.3.0"
    found: dict[str, str] = {}
    for t in types:
        if t in GGML_TYPE_MIN:
            found[f"tensor type {t} needs llama-cpp-python >= {GGML_TYPE_MIN[t]}"] = GGML_TYPE_MIN[t]
        else:
            found[f"tensor type {t} is not in edgellm's table: needs the llama.cpp it was tested with"] = fallback
    need = _max_version(found.values()) if found else fallback
    reasons = tuple(sorted(found, key=lambda k: parse_version(found[k]), reverse=True))
    return Requirement("llama-cpp-python", need, reasons, tuple(GGUF_FEATURES[t] for t in types if t in GGUF_FEATURES))


# -- artifacts -------------------------------------------------------------------------------------------------------
def requirements_for(artifact: str | Path) -> ArtifactRequirements:
    """Requirements of an artifact folder (edgellm.json) or a bare .gguf / .onnx file."""
    from .loading import resolve_artifact

    resolved = resolve_artifact(artifact)
    path = resolved.path / "model.onnx" if resolved.path.is_dir() else resolved.path
    if resolved.format == "onnx":
        return ArtifactRequirements("onnx", (onnx_requirement(path),))
    return ArtifactRequirements("gguf", (gguf_requirement(path),))


@lru_cache(maxsize=None)
def recipe_requirements(quant: str) -> ArtifactRequirements:
    """What an ONNX artifact of edgellm's converter with this recipe needs, before the model is converted: the
    recipe's graph built on a one-layer random Llama (converters/synthetic.py; ~1 s, once per recipe and
    process) and read like any artifact. The ops are the recipe's (quantized matmuls and tables, attention,
    norms); a family with ops of its own is checked again on its converted artifact (bundle does)."""
    import tempfile
    from dataclasses import replace

    from .converters.onnx import convert_to_onnx
    from .converters.quant import QuantSpec, get_recipe
    from .converters.synthetic import write_tiny_llama

    def rtn(spec: QuantSpec) -> QuantSpec:   # GPTQ changes the values, not the graph: skip its calibration
        return replace(spec, method="rtn") if spec.method == "gptq" else spec

    r = get_recipe(quant)
    same_graph = replace(r, weight=rtn(r.weight), lm_head=rtn(r.lm_head), embeddings=rtn(r.embeddings),
                         overrides=tuple((suffix, rtn(spec)) for suffix, spec in r.overrides))
    with tempfile.TemporaryDirectory(prefix="edgellm-recipe-") as tmp:
        folder = write_tiny_llama(Path(tmp) / "hf", hidden=128, ffn=256)
        return requirements_for(convert_to_onnx(folder, Path(tmp) / "onnx", recipe=same_graph).path)


def check_runtime(reqs: ArtifactRequirements, target: Mapping[str, str | None]) -> list[str]:
    """Why the target cannot run the artifact (empty: it can). `target` maps a runtime distribution name to the
    version the target has (None or absent: not installed)."""
    problems: list[str] = []
    for r in reqs.requirements:
        have = target.get(r.runtime)
        if have is None:
            problems.append(f"{r.runtime} is not installed on the target (needs >= {r.min_version})")
        elif parse_version(have) < parse_version(r.min_version):
            # every recorded fact the target's version misses (reasons name their version: "... >= 1.23 ...")
            missed = [why for why in r.reasons if _reason_version(why) > parse_version(have)] or ["recorded minimum"]
            problems.append(f"{r.runtime} {have} < {r.min_version}: {'; '.join(missed)}")
    return problems


def _reason_version(reason: str) -> Version:
    m = re.search(r">= (\d+(?:\.\d+)*)", reason)
    return parse_version(m.group(1)) if m else (0,)


def require_runtime(reqs: ArtifactRequirements, target: Mapping[str, str | None], what: str = "the artifact") -> None:
    """check_runtime as a typed refusal (BackendUnavailableError with the reasons and a hint)."""
    problems = check_runtime(reqs, target)
    if problems:
        need = ", ".join(f"{r.runtime}>={r.min_version}" for r in reqs.requirements)
        raise BackendUnavailableError(f"the target runtime cannot run {what}: " + "; ".join(problems),
                                      f"install {need} on the target, or pick a variant in another format/quant")


# -- planning: which variants a profile's pinned runtimes refuse --------------------------------------------------
def runtime_refusals(model: Path, facts: ModelFacts, dev: Device) -> tuple[dict[tuple[str, str], str], str]:
    """((format, QUANT) -> why the target's runtimes cannot run it, a reason line) for a profile that pins its
    runtimes (`runtimes` in profiles.json); nothing for other devices. A ready artifact is checked from its own
    graph or tensor types (edge_requirements); an HF folder's variants from the GGUF types the planner predicts
    per quant, and for ONNX from the recipe's graph (recipe_requirements). A runtime the profile does not list
    is one the target does not have."""
    from .devices.planner import QUANT_LADDER, profile_options
    from .model_facts import _gguf_file

    target = dev.profile.runtime_versions if dev.profile is not None else {}
    if not target or dev.profile is None:
        return {}, ""
    pins = ", ".join(f"{k} {v}" for k, v in sorted(target.items()))
    wanted: dict[tuple[str, str], ArtifactRequirements] = {}
    if facts.source != "hf":
        fmt = "onnx" if facts.source == "onnx" else "gguf"
        gguf = _gguf_file(model)
        if gguf is not None:
            wanted[(fmt, (facts.quant or "").upper())] = ArtifactRequirements("gguf", (gguf_requirement(gguf),))
        else:
            wanted[(fmt, (facts.quant or "").upper())] = ArtifactRequirements(
                "onnx", (onnx_requirement(_onnx_file(model)),))
    else:
        # the options plan_model tries: the profile's, or the whole ladder when the converter refuses its formats
        options = profile_options(dev.profile) + (list(QUANT_LADDER) if facts.refused_formats else [])
        for option in options:
            if option.format == "gguf":
                layout = facts.layout(option.name)
                types = [t.dtype for t in layout] if layout else [option.main_type]
                wanted[("gguf", option.name.upper())] = ArtifactRequirements("gguf", (gguf_types_requirement(types),))
            else:
                wanted[("onnx", option.name.upper())] = recipe_requirements(option.name)
    refused = {key: "; ".join(problems) for key, reqs in wanted.items() if (problems := check_runtime(reqs, target))}
    return refused, f"target runtimes ({dev.profile.name}): {pins}; the chosen variant runs on them"


def _onnx_file(p: Path) -> Path:
    from .converters.manifest import MANIFEST_NAME
    from .model_facts import _json_or_empty, genai_decoder

    if p.is_file():
        return p
    if (p / MANIFEST_NAME).is_file():
        file = _json_or_empty(p / MANIFEST_NAME).get("file")
        if isinstance(file, str) and (p / file).resolve().is_relative_to(p.resolve()):
            return p / file
    return genai_decoder(p)
