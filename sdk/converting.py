"""Façade over the converters: `edgellm.convert` and `edgellm.unpack`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import difflib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from .errors import ConversionError, OutputPathError, QuantizationError, missing_extra
from .outputs import writing_to
from .progress import ProgressArg, Reporter, reporter


@dataclass(frozen=True)
class ConvertResult:
    """What `edgellm.convert` made, the same shape for every format (built from the converter's own result).

    path: the model file (.gguf / model.onnx); manifest_path: its edgellm.json; tensor_types: tensor count per
    stored type; fallbacks: tensors kept at another type than asked, each with the reason; files: every file of
    the artifact (names in its folder); fused: ONNX only, whether attention is one fused operator (None for
    GGUF); seconds: the converter's wall time when it reports one (0.0 otherwise)."""
    path: Path
    manifest_path: Path
    format: str
    quant: str
    tensor_types: dict[str, int] = field(default_factory=dict)
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    fused: bool | None = None
    seconds: float = 0.0

    @classmethod
    def from_converter(cls, fmt: str, r: Any) -> "ConvertResult":
        path = Path(r.path)
        return cls(path=path, manifest_path=Path(r.manifest_path), format=fmt, quant=str(r.quant),
                   tensor_types=dict(getattr(r, "tensor_types", None) or {}),
                   fallbacks=list(getattr(r, "fallbacks", None) or []),
                   files=list(getattr(r, "files", None) or [path.name]), fused=getattr(r, "fused", None),
                   seconds=float(getattr(r, "seconds", 0.0) or 0.0))


def convert(model: str | Path, output: str | Path, format: str = "gguf", quant: str = "Q8_0",  # noqa: A002
            *, overwrite: bool = False, progress: ProgressArg | Reporter = None, **options: Any) -> ConvertResult:
    """Convert an HF folder into an artifact folder. Returns a `ConvertResult` (path, manifest, types, ...).

    OUT may not be the model folder or inside it; files a killed run left in OUT are removed first; OS errors
    while writing (full disk, permissions) are OutputPathError (sdk/outputs.py). An OUT that exists and holds
    files is refused unless `overwrite=True`, which replaces it whole once the new artifact is complete (no old
    file stays beside the new ones). progress: None (a progress line when stderr is a terminal), True, False or
    a callable taking an `edgellm.progress.ProgressEvent` (see sdk/progress.py).

    `context_length` (an option) is deliberately not `n_ctx`: it is the longest context the artifact declares
    (written as GGUF `<arch>.context_length` and the manifest's `context_length`, default the model's
    max_position_embeddings), a property of the file. `n_ctx` (load, plan, serve, eval) is the context one
    loaded model allocates, at most that."""
    fmt = format.lower() if isinstance(format, str) else format
    if fmt not in ("gguf", "onnx"):
        raise ConversionError(f"unknown format {format!r}; choose gguf or onnx")
    _check_options(quant, options)
    check_quant(fmt, quant)            # a bad argument is reported before anything touches the output
    rep = reporter(progress)
    if fmt == "onnx":
        _require_onnx()
    with writing_to(output, model) as out:
        busy = out.is_dir() and any(out.iterdir())
        if out.exists() and not out.is_dir():
            raise OutputPathError(f"{out} exists and is not a folder", "choose a folder path for OUT")
        if busy and not overwrite:
            raise OutputPathError(f"{out} already exists and is not empty",
                                  "pass overwrite=True (--overwrite) to replace it, or choose another folder")
        target = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}" if busy else out
        try:
            result = _run(fmt, model, target, quant, rep, options)
            if busy:
                result = _swap_in(target, out, result)
        finally:
            if busy and target.exists():
                shutil.rmtree(target, ignore_errors=True)
        return result


def _run(fmt: str, model: str | Path, out: Path, quant: str, rep: Any, options: dict[str, Any]) -> ConvertResult:
    if fmt == "gguf":
        from .converters.gguf import convert_to_gguf
        return ConvertResult.from_converter(fmt, convert_to_gguf(model, out, quant, progress=rep, **options))
    from .converters.onnx import convert_to_onnx
    return ConvertResult.from_converter(fmt, convert_to_onnx(model, out, quant, progress=rep, **options))


def _swap_in(stage: Path, out: Path, result: ConvertResult) -> ConvertResult:
    """Replace OUT by the finished `stage` folder; the old OUT is removed (as a `.OUT.partial-*` name, which the
    next run cleans if this one is killed midway). The result's paths are moved to OUT."""
    old = out.parent / f".{out.name}.partial-old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)
    def moved(p: Path) -> Path:
        return out / p.relative_to(stage) if stage in p.parents else p
    return dataclasses.replace(result, path=moved(result.path), manifest_path=moved(result.manifest_path))


def _require_onnx() -> None:
    """The ONNX converter needs the `onnx` package (the `edgellm[onnx]` extra): a typed error before any work."""
    try:
        import onnx  # noqa: F401
        from .converters import onnx as _converter  # noqa: F401
    except ImportError as exc:
        raise missing_extra(exc, "ONNX conversion") from None


def _norm(name: str) -> str:
    return "".join(ch for ch in name.upper() if ch.isalnum())


def check_quant(fmt: str, quant: Any) -> None:
    """QuantizationError for a quant name `fmt` does not know, with the nearest known name or the other format."""
    if not isinstance(quant, str) or quant.lower() == "auto":
        return
    from .converters.gguf_types import QUANT_TYPES
    from .converters.quant import RECIPES

    gguf_names, onnx_names = list(QUANT_TYPES), list(RECIPES)
    mine, other = (gguf_names, onnx_names) if fmt == "gguf" else (onnx_names, gguf_names)
    if quant.upper() in {n.upper() for n in mine}:
        return
    exact_other = [n for n in other if n.upper() == quant.upper() or _norm(n) == _norm(quant)]
    if exact_other:
        flag = "--format onnx" if fmt == "gguf" else "--format gguf"
        kind, this = ("an ONNX quant", "a GGUF type") if fmt == "gguf" else ("a GGUF type", "an ONNX quant")
        raise QuantizationError(f"{quant!r} is {kind}, not {this}",
                                f"add {flag} (API: format={flag.split()[-1]!r}), or pick {this}: {', '.join(mine)}")
    near = [n for n in mine if _norm(n) == _norm(quant)]
    near = near or difflib.get_close_matches(quant.upper(), [n.upper() for n in mine], n=1, cutoff=0.6)
    near = [next(n for n in mine if n.upper() == m.upper()) for m in near]
    kind = "GGUF quant type" if fmt == "gguf" else "ONNX quant"
    hint = (f"did you mean {near[0]}? " if near else "") + f"{fmt.upper()} choices: {', '.join(mine)}"
    raise QuantizationError(f"unknown {kind} {quant!r}", hint)


# option -> (lowest, highest) for the integer options the converters take; None is always allowed (the default)
_INT_OPTIONS = {"context_length": (1, 1 << 26), "threads": (1, 1024), "block_size": (16, 1 << 16),
                "accuracy_level": (0, 4), "calibration_tokens": (1, 1 << 24)}
_STR_OPTIONS = ("pre_tokenizer", "lm_head", "embeddings", "rounding", "mix")


def _check_options(quant: Any, options: dict[str, Any]) -> None:
    """Type and range of convert's arguments, before any file is touched (ConversionError)."""
    problems = []
    if not isinstance(quant, str) or not quant:
        problems.append(f"quant={quant!r} must be a quant name such as 'Q4_K_M' or 'int4'")
    for key, (lo, hi) in _INT_OPTIONS.items():
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
            problems.append(f"{key}={value!r} must be an integer in [{lo}, {hi}]")
    for key in _STR_OPTIONS:
        if options.get(key) is not None and not isinstance(options[key], str):
            problems.append(f"{key}={options[key]!r} must be a string")
    budget = options.get("calibration_time")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0):
        problems.append(f"calibration_time={budget!r} must be a positive number of seconds")
    memory = options.get("max_memory")
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, str))
                               or (isinstance(memory, int) and memory <= 0)):
        problems.append(f"max_memory={memory!r} must be a positive number of bytes or a size such as '4GiB'")
    imatrix = options.get("imatrix")
    if imatrix is not None and not isinstance(imatrix, (bool, str, os.PathLike)):
        problems.append(f"imatrix={imatrix!r} must be True, False, None (automatic) or a .imatrix file path")
    if problems:
        raise ConversionError("invalid convert arguments: " + "; ".join(problems),
                              "see `edgellm convert --help` for the allowed values")


def _gguf_in(path: Path) -> Path:
    """The .gguf file `unpack` reads: the path itself, or the one .gguf of an artifact folder."""
    from .errors import ArtifactError

    if not path.is_dir():
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    if not ggufs:
        raise ArtifactError(f"{path} is a folder with no .gguf file",
                            "pass a .gguf file or a GGUF artifact folder (unpack rebuilds HF folders from GGUF)")
    raise ArtifactError(f"{path} holds {len(ggufs)} .gguf files: " + ", ".join(p.name for p in ggufs[:5]),
                        f"pass one of them, e.g. {ggufs[0]}")


def unpack(gguf_path: str | Path, output: str | Path, dtype: str = "BF16", overwrite: bool = False) -> Path:
    """Rebuild a Hugging Face folder from a GGUF file, or from a GGUF artifact folder (its one .gguf file)."""
    from .converters.gguf_checks import validate_gguf
    from .converters.gguf_to_hf import gguf_to_hf
    src = _gguf_in(Path(gguf_path))
    validate_gguf(src)                 # the whole file, metadata included, before anything is built from it
    with writing_to(output) as out:
        return gguf_to_hf(src, out, dtype=dtype, overwrite=overwrite)
