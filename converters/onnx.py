"""HF folder -> ONNX artifact folder: model.onnx + model.onnx.data + genai_config.json + tokenizer + edgellm.json.

Streaming: weights are read by memory map, quantized one tensor at a time and appended to the external
data file; the graph keeps pointers only. Everything is written into a hidden staging folder beside the
output and moved into place when complete, manifest last, so a failure leaves no partial artifact.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConversionError, OutputPathError, TokenizerError, missing_extra
from ..progress import ProgressArg, Reporter, Stage, reporter
from .architectures import get_family
from .calibration import (DEFAULT_SEQ_LEN, DEFAULT_TOKENS, CalibrationSet, blas_threads, calibration_set,
                          check_time_budget)
from .hf import HFModel, read_hf_model
from .manifest import Manifest, sha256_file, write_manifest
from .onnx_genai import write_genai_files
from .onnx_memory import check_budget
from .onnx_stream import default_threads
from .quant import RECIPES, Recipe, check_blocks, get_recipe
from .rope import rope_kind

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
ORT_FILE = "model.ort"
REQUIRED_OPS_FILE = "required_operators.config"

# Named recipes; they double as the CLI's --quant choices for --format onnx.
ONNX_QUANTS: tuple[str, ...] = tuple(RECIPES)

# (flag, argparse kwargs). Each dest is a keyword of convert_to_onnx; the lead's `edgellm convert` adds them.
ONNX_CLI_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--block-size", {"dest": "block_size", "type": int, "default": None, "choices": (16, 32, 64, 128, 256),
                      "help": "int4/int8 block size along the input dimension, for every quantized tensor "
                              "(default: the recipe's, 32 with 64 for the MLP down projection) (ONNX)"}),
    ("--symmetric", {"dest": "symmetric", "action": "store_true", "default": None,
                     "help": "symmetric int blocks (no zero points) (ONNX)"}),
    ("--accuracy-level", {"dest": "accuracy_level", "type": int, "default": 4, "choices": (0, 1, 2, 3, 4),
                          "help": "MatMulNBits compute precision: 0 default, 1 fp32, 2 fp16, 3 bf16, 4 int8 (ONNX)"}),
    ("--standard-ops", {"dest": "fused", "action": "store_false", "default": True,
                        "help": "only ai.onnx ops, no onnxruntime contrib ops (ONNX)"}),
    ("--lm-head", {"dest": "lm_head", "default": None, "choices": ("int4", "int8", "fp16", "fp32"),
                   "help": "precision of the LM head (default: the recipe's) (ONNX)"}),
    ("--embeddings", {"dest": "embeddings", "default": None,
                      "choices": ("shared", "int4", "int8", "fp16", "fp32"),
                      "help": "precision of the embedding table; shared = the LM head's quantized table, "
                              "stored once when the model ties them (default: the recipe's) (ONNX)"}),
    ("--calibration-text", {"dest": "calibration_text", "default": None, "metavar": "FILE",
                            "help": "calibration text for ONNX GPTQ and GGUF's importance matrix / GPTQ rounding "
                                    "(default: edgellm's mix of narrative, dialogue, chat, code, Python reference "
                                    "topics and stdlib docstrings, disjoint from `edgellm eval`'s default text)"}),
    ("--calibration-tokens", {"dest": "calibration_tokens", "type": int, "default": DEFAULT_TOKENS,
                              "help": "calibration tokens, cut into 512-token sequences (default "
                                      f"{DEFAULT_TOKENS}; with --calibration-time, the most it uses)"}),
    ("--calibration-time", {"dest": "calibration_time", "type": float, "default": None, "metavar": "SECONDS",
                            "help": "time budget for the GPTQ calibration pass: after each layer the pass projects "
                                    "the rest from its measured pace and drops whole calibration sequences until "
                                    "it fits (the first layer uses all of them; GPTQ's own arithmetic is not cut, "
                                    "so a budget below it is exceeded with a warning) (ONNX; GGUF: the importance "
                                    "matrix / GPTQ rounding pass)"}),
    ("--max-memory", {"dest": "max_memory", "default": None, "metavar": "SIZE",
                      "help": "memory budget for the conversion, e.g. 4GiB: planned from the tensor sizes before "
                              "anything is written (fewer quantization threads if that fits), refused with the "
                              "numbers otherwise (ONNX and GGUF)"}),
    ("--ort-format", {"dest": "ort_format", "action": "store_true", "default": False,
                      "help": "also write model.ort + required_operators.config for a reduced mobile build (ONNX)"}),
)


@dataclass
class ONNXResult:
    path: Path
    manifest_path: Path
    quant: str
    fused: bool
    tensor_types: dict[str, int]
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _check_recipe(model: HFModel, recipe: Recipe) -> None:
    """Refuse block sizes that do not divide a weight's input dimension, before writing anything. The
    decoder linears of every family: qkv and gate_up read hidden, o_proj reads heads*head_dim, down ffn."""
    c = model.config
    attn = c.num_heads * c.head_dim
    linears = [("attn.qkv_proj", (attn, c.hidden_size)), ("attn.o_proj", (c.hidden_size, attn)),
               ("mlp.gate_up_proj", (c.intermediate_size, c.hidden_size)),
               ("mlp.down_proj", (c.hidden_size, c.intermediate_size))]
    checks = [(recipe.spec_for_linear("layers.0." + short), "layers.0." + short, shape) for short, shape in linears]
    checks += [(recipe.spec_for(role), role, (c.vocab_size, c.hidden_size)) for role in ("lm_head", "embeddings")]
    for spec, name, shape in checks:
        if spec.bits:
            check_blocks(name, shape, spec.block_size)


def _stage_dir(out_dir: Path) -> Path:
    """A private staging folder beside OUT. mkdtemp makes it 0700; it gets a new folder's mode (0777 less the
    umask, 0755 usually) so the artifact renamed from it is as readable as any folder the user creates."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        os.chmod(stage, 0o777 & ~_umask())
        return stage
    except OSError as exc:
        raise OutputPathError(f"cannot write beside {out_dir}: {exc.strerror or exc}") from None


def _umask() -> int:
    mask = os.umask(0o022)   # the only portable way to read it: set and restore at once
    os.umask(mask)
    return mask


def _layer_progress(family: Any, stage: Stage, calib: CalibrationSet | None) -> Any:
    """The family with its block function wrapped to report each finished graph layer (build_decoder calls it
    with graph ops once per layer, after the layer's GPTQ calibration when the recipe is calibrated, which calls
    it with numpy ops first)."""
    from .onnx_block_ops import OnnxOps

    block = family.block

    def reporting_block(ops: Any, args: Any, i: int, *rest: Any) -> Any:
        out = block(ops, args, i, *rest)
        if isinstance(ops, OnnxOps):
            message = f"layer {i}" + (" calibrated" if calib is not None else "")
            if calib is not None and calib.time_budget_s is not None and calib.log.layers:
                message += f" on {calib.log.layers[-1].tokens} tokens, pass projected " \
                           f"{calib.log.projected_s or 0:.0f}s of {calib.time_budget_s:.0f}s"
            stage.advance(message=message)
        return out
    return dataclasses.replace(family, block=reporting_block)


def _export_ort(stage: Path, threads: int | None) -> list[str]:
    """model.ort (ORT format, basic optimizations) + required_operators.config for a reduced build."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConversionError(f"--ort-format needs onnxruntime ({exc})", "pip install 'edgellm[onnx]'") from None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(stage / ORT_FILE)
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.intra_op_num_threads = threads or 1
    ort.InferenceSession(str(stage / MODEL_FILE), so, providers=["CPUExecutionProvider"])
    import onnx
    ops: dict[tuple[str, int], set[str]] = {}
    proto = onnx.load(str(stage / MODEL_FILE), load_external_data=False)
    versions = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    for node in proto.graph.node:
        domain = node.domain or "ai.onnx"
        ops.setdefault((domain, versions.get(domain, 1)), set()).add(node.op_type)
    lines = [f"{d};{v};{','.join(sorted(names))}" for (d, v), names in sorted(ops.items())]
    (stage / REQUIRED_OPS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [ORT_FILE, REQUIRED_OPS_FILE]


def _publish(stage: Path, out_dir: Path, files: list[str]) -> None:
    """Move the finished files into `out_dir` (manifest last, by the caller)."""
    if not out_dir.exists():
        os.replace(stage, out_dir)
        return
    if not out_dir.is_dir():
        raise OutputPathError(f"{out_dir} exists and is not a folder")
    for name in files:
        os.replace(stage / name, out_dir / name)


def convert_to_onnx(model_dir: str | Path, output: str | Path, quant: str = "int4", *, block_size: int | None = None,
                    symmetric: bool | None = None, accuracy_level: int = 4, fused: bool = True,
                    lm_head: str | None = None, embeddings: str | None = None, recipe: Recipe | None = None,
                    ort_format: bool = False, context_length: int | None = None, threads: int | None = None,
                    calibration_text: str | Path | None = None, calibration_tokens: int = DEFAULT_TOKENS,
                    calibration_time: float | None = None, max_memory: int | str | None = None,
                    progress: ProgressArg | Reporter = False) -> ONNXResult:
    """Convert an HF folder into an ONNX artifact folder `output/` (model.onnx + external data + genai files).

    quant names a recipe (ONNX_QUANTS) unless `recipe` is given; block_size/symmetric/lm_head/embeddings
    override it. fused=False writes only ai.onnx ops. GPTQ recipes calibrate on `calibration_tokens` of
    `calibration_text` (default: standard-library docstrings); `calibration_time` (seconds) bounds that pass:
    whole sequences are dropped after a layer when the measured pace projects past it (calibration.Calibrator;
    the manifest records the tokens used). Returns paths, the recipe name and tensor types.
    threads: quantization workers (default: the cores this process may use). max_memory: a budget in bytes or
    a string such as "4GiB"; the peak is planned from the tensor sizes first (onnx_memory.py), threads are
    lowered to fit, and a budget even one thread cannot meet is a ConversionError with the numbers.
    progress: see edgellm.progress (True/None/False or a callable taking a ProgressEvent)."""
    try:
        from .onnx_graph import GraphOptions, build_decoder
        from .onnx_ops import GraphWriter
    except ImportError as exc:
        raise missing_extra(exc, "ONNX conversion") from None

    t0 = time.perf_counter()
    rep = reporter(progress)
    base = recipe or get_recipe(quant)
    rec = base.with_options(block_size=block_size, symmetric=symmetric, lm_head=lm_head, embeddings=embeddings)
    if not fused and rec.embeddings.bits:
        if embeddings is not None:
            raise ConversionError(f"--embeddings {embeddings} needs onnxruntime's GatherBlockQuantized",
                                  "drop --standard-ops, or pass --embeddings fp16")
        rec = rec.with_options(embeddings="fp16")    # the standard-op graph keeps a float table
    calibration_time = check_time_budget(calibration_time)
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise ConversionError(f"accuracy_level={accuracy_level} must be 0..4")
    out_dir = Path(output)
    if (out_dir / MODEL_FILE).exists() and out_dir.resolve() == Path(model_dir).resolve():
        raise OutputPathError("the output folder is the input folder")
    with read_hf_model(model_dir) as model:
        family = get_family(model.config.architecture)
        if family.onnx_refusal:
            raise ConversionError(f"{model.config.architecture} cannot be exported to ONNX: {family.onnx_refusal}",
                                  "convert it to GGUF (--format gguf), which llama.cpp runs")
        if model.tokenizer_json is None:   # the runtime tokenizes with it: an artifact without it cannot run
            raise TokenizerError(f"{model.path} has no tokenizer.json; an ONNX artifact ships it for the runtime",
                                 "copy the model's tokenizer.json (from its hub page) into the folder and retry")
        rope_kind(family.parse(model.config).rope_scaling, family.rope_kinds)   # refuse before writing anything
        _check_recipe(model, rec)
        ctx = int(context_length or model.config.max_position_embeddings)
        mem = check_budget(model.config, model.tensor_infos(), rec, threads or default_threads(),
                           calibration_tokens if rec.calibrated else 0, max_memory)
        log.info("ONNX %s: planned peak %.2f GiB with %d threads (%s)", rec.name, mem.total / 2**30, mem.threads,
                 mem.describe())
        calib = None
        if rec.calibrated:
            with rep.stage("tokenizing calibration text", unit="tokens") as st:
                calib = calibration_set(Path(model_dir), calibration_text, calibration_tokens,
                                        seq_len=min(DEFAULT_SEQ_LEN, ctx))
                head = rec.spec_for("lm_head")
                calib = dataclasses.replace(calib, time_budget_s=None if calibration_time is None
                                            else float(calibration_time),
                                            head_weights=model.config.vocab_size * model.config.hidden_size
                                            if head.method == "gptq" else 0)
                st.update(calib.tokens, f"{calib.tokens} tokens from {calib.source}")
        n_threads = mem.threads
        stage = _stage_dir(out_dir)
        try:
            writer = GraphWriter(stage / DATA_FILE, DATA_FILE, threads=n_threads)
            n_layers = family.parse(model.config).layers
            label = f"ONNX {rec.name} layers" + (" (GPTQ-calibrated)" if calib is not None else "")
            try:
                # GPTQ runs its own threads (row slices, the Hessian factor's halves): BLAS stays on one thread
                with rep.stage(label, total=n_layers, unit="layers") as layers, \
                        blas_threads(1) if calib is not None else contextlib.nullcontext():
                    build_decoder(model, _layer_progress(family, layers, calib), writer,
                                  GraphOptions(rec, fused, accuracy_level, max_positions=ctx, calibration=calib))
            finally:
                writer.finish()
            with rep.stage("writing model.onnx, tokenizer and genai_config"):
                proto = writer.model(f"edgellm-{model.config.model_type or 'decoder'}", fused)
                (stage / MODEL_FILE).write_bytes(proto.SerializeToString())
                files = [MODEL_FILE, DATA_FILE]
                files += write_genai_files(model, stage, filename=MODEL_FILE, context_length=ctx,
                                           share_buffer=fused)
            if ort_format:
                with rep.stage("exporting model.ort"):
                    files += _export_ort(stage, threads)
            size = sum((stage / f).stat().st_size for f in (MODEL_FILE, DATA_FILE))
            manifest = Manifest(
                format="onnx", file=MODEL_FILE, files=files, quant=rec.name, size_bytes=size,
                sha256=sha256_file(stage / MODEL_FILE), context_length=ctx,
                source={"path": str(Path(model_dir).resolve()), "architecture": model.config.architecture,
                        "family": family.name,
                        "dtype": model.config.torch_dtype},
                tokenizer={"model": "BPE", "vocab_size": model.config.vocab_size,
                           "bos_id": model.config.bos_token_id, "eos_ids": list(model.config.eos_token_ids)},
                tensor_types=dict(writer.tensor_types),
                extra={"fused": fused, "weights": rec.weights_label, "lm_head": rec.lm_head.label,
                       "embeddings": rec.embeddings.label, "accuracy_level": accuracy_level,
                       "data_sha256": sha256_file(stage / DATA_FILE), "ort_format": ort_format,
                       "genai_config": "genai_config.json",
                       "shared_embeddings": rec.shares_embeddings(model.config.tie_word_embeddings),
                       "calibration": None if calib is None else {
                           "source": calib.source, "tokens": calib.tokens, "time_budget_s": calib.time_budget_s,
                           **calib.log.summary()}},
            )
            _publish(stage, out_dir, files)
            manifest_path = write_manifest(out_dir, manifest)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
    seconds = time.perf_counter() - t0
    log.info("wrote %s (%s, %s) in %.1fs", out_dir / MODEL_FILE, rec.name, "fused" if fused else "standard", seconds)
    return ONNXResult(out_dir / MODEL_FILE, manifest_path, rec.name, fused, dict(writer.tensor_types), files, seconds)
