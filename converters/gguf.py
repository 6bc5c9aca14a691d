"""HF folder -> GGUF, torch-free and streaming.

F32/F16/BF16/Q8_0 are written by edgellm tensor by tensor (peak memory ~ the largest tensor). Every
other llama.cpp type is produced by llama.cpp's own quantizer, run in-process through llama-cpp-python
on an intermediate F16/BF16 GGUF; tensors it had to store in another type (rows not divisible by the
type's block) are reported as fallbacks. Files appear under their final name only when complete.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ConversionError, OutputPathError
from ..progress import ProgressArg, Reporter, reporter
from .architectures import get_family
from .families.base import Args, Family, TensorRule, check_tensors, to_gguf
from .calibration import DEFAULT_TOKENS, check_time_budget
from .gguf_gptq import Encoded, GPTQResult, drop_pages
from .gguf_mix import DEFAULT_MIX, Mix, check_mix
from .gguf_rounding import (Plan, Rounding, calibrate, fitting, gptq_imatrix, pinned_types, resolve_rounding,
                            rounding_record)
from .gguf_memory import check_gguf_budget
from .gguf_metadata import write_metadata
from .gguf_types import GGUFQuant, encode, get_quant, native_type_for, tensor_nbytes
from .hf import HFModel, read_hf_model
from .imatrix import prepare_imatrix, require_imatrix, resolve_imatrix
from .llama_quantize import quantize_gguf
from .rope import llama_cpp_freq_factors, rope_kind
from .manifest import Manifest, sha256_file, write_manifest
from .tokenizer import vocab_from_tokenizer_json

log = logging.getLogger(__name__)


@dataclass
class GGUFResult:
    path: Path
    manifest_path: Path
    quant: str
    tensor_types: dict[str, int]
    fallbacks: list[dict[str, str]] = field(default_factory=list)




def _plan_tensors(model: HFModel, family: Family, args: Args) -> Plan:
    """Every tensor in writing order; unknown tensors, missing ones and shapes config.json disagrees with are
    errors (families/base.check_tensors)."""
    infos = model.tensor_infos()
    rows = check_tensors(family, args, {n: tuple(i.shape) for n, i in infos.items()}, str(model.path))
    if not args.tied and not any(gg == "output.weight" for _, gg, _ in rows):
        log.warning("lm_head.weight missing although tie_word_embeddings is false; using tied head")
    return [(hf, gg, tuple(rule.gguf_shape(args)) if rule.gguf_shape else tuple(infos[hf].shape), rule)
            for hf, gg, rule in rows]


def _names(model: HFModel, quant: str, n_params: int) -> dict[str, str | None]:
    import gguf.utility as gu

    name = model.config.raw.get("_name_or_path") or model.path.name
    base = Path(str(name)).name
    finetune = None
    for tag in ("Instruct", "Chat", "Base"):
        if base.lower().endswith("-" + tag.lower()):
            base, finetune = base[: -len(tag) - 1], tag
    size = gu.size_label(n_params, 0, 0, 0)
    label = base
    for part in (size,):
        label = label.replace("-" + part, "")
    return {"name": Path(str(name)).name, "basename": label, "finetune": finetune, "size_label": size,
            "file": gu.naming_convention(label, label, finetune, None, size, quant) + ".gguf"}


_CHUNK_ELEMENTS = 1 << 22  # encode big tensors 4M elements at a time: temporaries stay small


def _encode_tensor(model: HFModel, args: Args, hf: str, rule: TensorRule, shape: tuple[int, ...],
                   ggml_type: str) -> np.ndarray:
    """One tensor, read and encoded to `ggml_type`; big 2-D tensors go slice by slice (rows are independent)."""
    transformed = rule.permute is not None or rule.to_canon is not None
    n = int(np.prod(shape))
    if transformed or len(shape) != 2 or n <= _CHUNK_ELEMENTS:
        w = model.tensor(hf)
        _check_finite(hf, w)
        return encode(to_gguf(w, rule, args), ggml_type)  # a permutation mixes rows: whole tensor
    step = max(1, _CHUNK_ELEMENTS // shape[1])
    first = model.tensor_rows(hf, 0, step)
    _check_finite(hf, first)
    part = encode(first, ggml_type)
    out = np.empty((shape[0], *part.shape[1:]), dtype=part.dtype)  # (rows, encoded bytes or values per row)
    out[:step] = part
    for r0 in range(step, shape[0], step):
        rows = model.tensor_rows(hf, r0, r0 + step)
        _check_finite(hf, rows)
        out[r0:r0 + step] = encode(rows, ggml_type)
    return out


def _check_finite(name: str, w: np.ndarray) -> None:
    if not np.isfinite(w).all():
        raise ConversionError(f"tensor {name} holds NaN or Inf values", "the checkpoint is damaged")


def _write_native(model: HFModel, family: Family, args: Args, plan: Plan, quant: GGUFQuant, out_file: Path,
                  names: dict[str, str | None], vocab: Any, context_length: int | None, rep: Reporter,
                  encoded: Mapping[str, Encoded] | None = None) -> Counter[str]:
    """Write the GGUF with every tensor in `quant`'s native type, except those in `encoded` (GGUF name -> a
    tensor already in its final block type, e.g. GPTQ-rounded), written as they are."""
    import gguf

    encoded = encoded or {}

    writer = gguf.GGUFWriter(None, family.gguf_arch)
    write_metadata(writer, model, args, vocab, names, quant.file_type, context_length)
    family.gguf_metadata(writer, args)
    # tensors llama.cpp needs that the checkpoint does not hold: (GGUF name, float32 data)
    extra: list[tuple[str, np.ndarray]] = []
    factors = llama_cpp_freq_factors(args.head_dim, args.rope_theta, args.rope_scaling)
    if factors is not None:
        extra.append(("rope_freqs.weight", factors))
    extra += [(name, np.asarray(data, np.float32)) for name, data in family.gguf_tensors(args)]
    types: list[str] = []
    for _hf, gg, shape, rule in plan:
        t = encoded[gg].type if gg in encoded else "F32" if rule.keep_f32 else native_type_for(quant, gg, shape)
        types.append(t)
        writer.add_tensor_info(gg, shape, np.dtype(np.float32), tensor_nbytes(t, shape),
                               raw_dtype=gguf.GGMLQuantizationType[t])
    for gg, data in extra:
        types.append("F32")
        writer.add_tensor_info(gg, data.shape, np.dtype(np.float32), data.nbytes, raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file(out_file)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    try:
        with rep.stage(f"writing {quant.name}", total=len(plan), unit="tensors") as bar:
            for (hf, gg, shape, rule), t in zip(plan, types):
                if gg in encoded:
                    writer.write_tensor_data(encoded[gg].raw)
                    drop_pages(encoded[gg].raw)    # a spilled encoding's pages leave the resident set once written
                else:
                    writer.write_tensor_data(_encode_tensor(model, args, hf, rule, shape, t))
                model.release(hf)
                bar.advance()
        for _, data in extra:
            writer.write_tensor_data(data)
    finally:
        writer.close()
    return Counter(types)


def _read_types(path: Path) -> Counter[str]:
    from .gguf_reading import open_gguf

    return Counter(t.tensor_type.name for t in open_gguf(path).tensors)


def _bits(ggml_type: str) -> float:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    return 8.0 * size / block


def _quantize_watched(src: Path, dst: Path, q: GGUFQuant, source_type: str, threads: int | None,
                      rep: Reporter, imatrix: dict[str, np.ndarray] | None = None,
                      tensor_types: Mapping[str, str] | None = None) -> Any:
    """llama.cpp's quantizer has no progress callback: a watcher thread reports the output file's growth
    against the expected size (the intermediate's size scaled by the main type's bits per weight; when fallback
    tensors make the file larger than that, the total becomes unknown and only the bytes written are shown)."""
    try:
        expected: float | None = src.stat().st_size * _bits(q.main_type) / _bits(source_type)
    except (KeyError, OSError):
        expected = None
    stop = threading.Event()
    failed: list[BaseException] = []   # a callback's exception, raised on this thread once llama.cpp returns
    with rep.stage(f"quantizing {q.name} (llama.cpp)", total=expected, unit="B") as bar:
        def watch() -> None:
            while not stop.wait(0.5):
                try:
                    size = dst.stat().st_size
                    if bar.total is not None and size > bar.total:   # fallbacks: larger than estimated
                        bar.total = None
                    bar.update(size)
                except OSError:
                    pass
                except BaseException as exc:  # noqa: BLE001 - handed to the converting thread
                    failed.append(exc)
                    return
        watcher = threading.Thread(target=watch, name="edgellm-quantize-progress", daemon=True)
        if rep.enabled:
            watcher.start()
        try:
            result = quantize_gguf(src, dst, q.file_type, threads, imatrix=imatrix,
                                   tensor_types=[(f"^{re.escape(n)}$", t) for n, t in (tensor_types or {}).items()])
        finally:
            stop.set()
            if watcher.is_alive():
                watcher.join()
        if failed:
            raise failed[0]
        if dst.exists():
            bar.total = bar.done = dst.stat().st_size
    return result


def _vocab(model: HFModel, pre_tokenizer: str | None) -> Any:
    """The GGUF vocabulary from tokenizer.json, or from a SentencePiece tokenizer.model when that is all there is."""
    if model.tokenizer_json is not None:
        return vocab_from_tokenizer_json(model.tokenizer_json, model.config.vocab_size, model.tokenizer_config,
                                         pre_tokenizer or None)
    spm = Path(model.path) / "tokenizer.model"
    if spm.is_file():
        from .tokenizer_sentencepiece import read_sentencepiece

        return read_sentencepiece(spm, model.config.vocab_size, model.tokenizer_config)
    raise ConversionError(f"{model.path} has no tokenizer.json or tokenizer.model",
                          "GGUF embeds the tokenizer; copy the model's tokenizer files into the folder")


def convert_to_gguf(model_dir: str | Path, output: str | Path, quant: str = "Q8_0", *,
                    pre_tokenizer: str | None = None, context_length: int | None = None,
                    threads: int | None = None, progress: ProgressArg | Reporter = False,
                    imatrix: bool | str | Path | None = None, calibration_text: str | Path | None = None,
                    rounding: Rounding | None = None, calibration_tokens: int | None = None,
                    tensor_types: Mapping[str, str] | None = None,
                    calibration_time: float | None = None, mix: Mix = DEFAULT_MIX,
                    max_memory: int | str | None = None) -> GGUFResult:
    """Convert an HF folder into `output/` holding `<Name>-<Size>-<Finetune>-<QUANT>.gguf` + edgellm.json.
    progress: see edgellm.progress (True/None/False or a callable taking a ProgressEvent).
    imatrix: for the types llama.cpp's quantizer writes, True computes an importance matrix from the calibration
    text (converters/imatrix.py; saved next to the GGUF as `<file>.imatrix`), a path reads a `.imatrix` file,
    False quantizes without one (then IQ1/IQ2/IQ3_XXS/Q2_K_S are refused before any work); None (default) is True
    except for a folder unpacked from a GGUF (its weights already lie on a quantized grid).
    rounding: for the types llama.cpp's quantizer writes, "gptq" keeps llama.cpp's block headers and chooses the
    codes of every tensor whose type edgellm has a block layout for (converters/gguf_blocks.py) with GPTQ over the
    calibration text (converters/gguf_gptq.py; same types, size and kernels); "llama" leaves all rounding to
    llama.cpp; None (default) is "gptq" when an importance matrix is computed (imatrix True), else "llama".
    calibration_tokens: tokens of calibration text for the importance matrix and GPTQ (default 2048);
    calibration_time: a budget in seconds for that pass (whole sequences are dropped after a layer to meet it;
    the manifest's extra.rounding.calibration says what was used).
    mix (GPTQ rounding): "off" (default) keeps the recipe's types; "fast" lets a tensor take a same-size type whose
    kernels were measured not slower (Q4_K for Q4_0 rows of 256-multiples) when its measured output error is
    lower; "size" any same-size type (IQ4_NL too) (converters/gguf_mix.py). The file's size does not change.
    max_memory: a budget in bytes or a size such as "4GiB": the conversion's peak is planned from the tensor sizes
    (converters/gguf_memory.py) and refused with the numbers before anything is written when it does not fit.
    tensor_types: GGUF tensor name -> GGML type, replacing the recipe's choice for those tensors (a mixed recipe,
    e.g. from converters/sensitivity.py); checked against each tensor's shape before any work."""
    q = get_quant(quant)
    calibration_time = check_time_budget(calibration_time)
    check_mix(mix)
    imatrix = resolve_imatrix(model_dir, imatrix)
    require_imatrix(q, imatrix)
    method = resolve_rounding(q, imatrix, rounding)
    rep = reporter(progress)
    out_dir = Path(output)
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".edgellm-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise OutputPathError(f"cannot write into {out_dir}: {exc.strerror or exc}") from None
    tmp_files: list[Path] = []
    try:
        with read_hf_model(model_dir) as model:
            family = get_family(model.config.architecture)
            args = family.parse(model.config)
            rope_kind(args.rope_scaling, family.rope_kinds)  # refuse unsupported RoPE variants before writing anything
            vocab = _vocab(model, pre_tokenizer)
            plan = _plan_tensors(model, family, args)
            unknown = sorted(set(tensor_types or {}) - {gg for _, gg, _, _ in plan})
            if unknown:
                raise ConversionError(f"tensor_types names tensors this model does not have: {', '.join(unknown[:5])}",
                                      "use GGUF tensor names such as blk.0.ffn_down.weight (edgellm info lists them)")
            calibrating = method == "gptq" or (imatrix is True and getattr(q, "uses_imatrix", False))
            mem = check_gguf_budget(model.config, model.tensor_infos(), q, method,
                                    (calibration_tokens or DEFAULT_TOKENS) if calibrating else 0, max_memory)
            log.info("GGUF %s: planned peak %.2f GiB (%s)", q.name, mem.total / 2**30, mem.describe())
            n_params = sum(int(np.prod(s)) for _, _, s, _ in plan)
            names = _names(model, q.name, n_params)
            final = out_dir / str(names["file"])
            fallbacks: list[dict[str, str]] = []
            matrix = None
            gptq: GPTQResult | None = None
            if q.native:
                stage = final.with_name(final.name + ".partial")
                tmp_files.append(stage)
                _write_native(model, family, args, plan, q, stage, names, vocab, context_length, rep)
            else:
                # the intermediate llama.cpp quantizes from keeps the checkpoint's precision (F32 stays F32, so a
                # folder rebuilt from a quantized GGUF requantizes to the same codes)
                source_type = {"bfloat16": "BF16", "bf16": "BF16", "float32": "F32", "fp32": "F32"}.get(
                    (model.config.torch_dtype or "").lower(), "F16")
                base = stage_in = out_dir / (final.name + f".{source_type}.partial")
                tmp_files.append(stage_in)
                if method == "gptq":
                    spill = out_dir / (final.name + ".gptq.partial")     # the encoded tensors, until written
                    tmp_files.append(spill)
                    spill.mkdir(exist_ok=True)
                    with rep.stage("GPTQ rounding into llama.cpp blocks (calibration)"):
                        gptq = calibrate(model_dir, q, calibration_text, calibration_tokens, tensor_types,
                                         calibration_time, mix, spill)
                    gptq.tensors = fitting(gptq.tensors, plan)
                    matrix = gptq_imatrix(gptq, imatrix, out_dir / (final.stem + ".imatrix"))
                _write_native(model, family, args, plan, get_quant(source_type), base, names, vocab, context_length,
                              rep, gptq.tensors if gptq else None)
                stage = final.with_name(final.name + ".partial")
                tmp_files.append(stage)
                if gptq is None:
                    with rep.stage("importance matrix (calibration)"):
                        matrix = prepare_imatrix(model_dir, q, imatrix, out_dir / (final.stem + ".imatrix"),
                                                 calibration_text=calibration_text,
                                                 tokens=calibration_tokens or DEFAULT_TOKENS,
                                                 time_budget_s=calibration_time)
                fallbacks = _quantize_watched(stage_in, stage, q, source_type, threads, rep,
                                              matrix.means() if matrix else None,
                                              pinned_types(tensor_types, gptq)).fallbacks
            counts = _read_types(stage)
            os.replace(stage, final)
            manifest = Manifest(
                format="gguf", file=final.name, files=[final.name] + ([final.stem + ".imatrix"] if matrix else []),
                quant=q.name, size_bytes=final.stat().st_size,
                sha256=sha256_file(final), context_length=int(context_length or model.config.max_position_embeddings),
                source={"path": str(Path(model_dir).resolve()), "architecture": model.config.architecture,
                        "dtype": model.config.torch_dtype, "parameters": n_params},
                tokenizer={"model": vocab.model, "pre": vocab.pre, "vocab_size": len(vocab.tokens),
                           **{f"{k}_id": v for k, v in vocab.special_ids.items()}},
                tensor_types=dict(counts), fallbacks=fallbacks,
                extra={"gguf_arch": family.gguf_arch, "family": family.name, "file_type": q.file_type,
                       **({"imatrix": {"file": final.stem + ".imatrix", "tensors": len(matrix.sums),
                                       "tokens": matrix.chunk_count * matrix.chunk_size,
                                       "datasets": matrix.datasets}} if matrix else {}),
                       "rounding": rounding_record(method, gptq, mix)},
            )
            if fallbacks:
                kinds = Counter(f["type"] for f in fallbacks)
                log.warning("%d of %d tensors fell back from their %s type (rows not divisible by its block size): "
                            "%s (e.g. %s -> %s)", len(fallbacks), sum(counts.values()), q.name,
                            ", ".join(f"{n} -> {k}" for k, n in sorted(kinds.items())), fallbacks[0]["tensor"],
                            fallbacks[0]["type"])
            manifest_path = write_manifest(out_dir, manifest)
            return GGUFResult(final, manifest_path, q.name, dict(counts), fallbacks)
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        for p in tmp_files:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
