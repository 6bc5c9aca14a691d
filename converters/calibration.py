"""Calibration for GPTQ: a text, its token ids, and a numpy forward pass of the family's block (the same
block function the ONNX graph is built from) that collects each linear layer's input Hessian (X^T X) one
decoder layer at a time.

The pass is sequential, as in GPTQ: layer i's inputs come from layers 0..i-1 *as quantized*, so each layer
corrects the error the earlier ones left. Only one layer's weights and the hidden states of the calibration
tokens are in memory at a time, so the pass streams like the rest of the converter.

The default text mixes, paragraph by paragraph, three sources that ship with edgellm or Python: our own
varied sample (converters/data/calibration.txt: narrative, dialogue, chat turns, instructions, news,
arithmetic, code, a letter), the Python reference topics of `pydoc_data`, and docstrings of standard-library
modules disjoint from those `edgellm eval` scores by default, so calibration never sees the evaluation text.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import QuantizationError
from .families.base import Family
from .families.numpy_ops import NumpyOps, Quantizer, hessian
from .quant import BlockQuant

# Disjoint from edgellm.evaluation.DEFAULT_TEXT_MODULES.
CALIBRATION_MODULES: tuple[str, ...] = (
    "os", "re", "io", "math", "time", "socket", "sqlite3", "hashlib", "asyncio", "inspect", "ast", "types",
    "abc", "copy", "pprint", "struct", "uuid", "glob", "fnmatch", "configparser", "base64", "secrets",
    "html", "gzip", "bz2", "lzma", "selectors", "signal", "traceback", "warnings", "weakref", "operator",
    "numbers", "cmath", "codecs", "locale", "getpass", "platform", "mimetypes", "ipaddress", "smtplib",
)
DEFAULT_TOKENS = 2048
DEFAULT_SEQ_LEN = 512


def docstring_text(modules: Sequence[str], min_chars: int) -> str:
    """Docstrings of installed standard-library modules and their public callables, in a fixed order."""
    parts: list[str] = []
    total = 0
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        docs = [inspect.getdoc(mod)]
        for attr in sorted(getattr(mod, "__all__", ()) or ()):
            obj = getattr(mod, attr, None)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                docs.append(inspect.getdoc(obj))
        for doc in docs:
            if doc and len(doc) > 80:
                parts.append(doc.strip())
                total += len(doc)
        if total >= min_chars:
            break
    return "\n\n".join(parts)


def default_calibration_text(min_chars: int) -> str:
    """Paragraphs taken in turn from each source until `min_chars` are collected."""
    sources = [(Path(__file__).parent / "data" / "calibration.txt").read_text(encoding="utf-8")]
    try:
        from pydoc_data.topics import topics
        sources.append("\n\n".join(topics[k] for k in sorted(topics)))
    except ImportError:  # some distributions split pydoc_data out
        pass
    sources.append(docstring_text(CALIBRATION_MODULES, min_chars))
    paragraphs = [[p.strip() for p in src.split("\n\n") if len(p.strip()) > 40] for src in sources]
    out: list[str] = []
    total, i = 0, 0
    while total < min_chars and any(i < len(ps) for ps in paragraphs):
        for ps in paragraphs:
            if i < len(ps):
                out.append(ps[i])
                total += len(ps[i])
        i += 1
    return "\n\n".join(out)


@dataclass(frozen=True)
class CalibrationSet:
    ids: np.ndarray      # int64 [sequences, seq_len]
    source: str          # where the text came from, for the manifest

    @property
    def tokens(self) -> int:
        return int(self.ids.size)


def calibration_set(model_dir: Path, text_file: str | Path | None = None, tokens: int = DEFAULT_TOKENS,
                    seq_len: int = DEFAULT_SEQ_LEN) -> CalibrationSet:
    """Token ids of the calibration text, cut into `tokens // seq_len` sequences of `seq_len`."""
    from tokenizers import Tokenizer

    if tokens < seq_len or seq_len < 16:
        raise QuantizationError(f"calibration needs tokens >= seq_len >= 16 (got {tokens}, {seq_len})")
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise QuantizationError(f"GPTQ calibration needs {path}", "convert from a folder with tokenizer.json")
    tok = Tokenizer.from_file(str(path))
    if text_file is not None:
        try:
            text, source = Path(text_file).read_text(encoding="utf-8"), str(text_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise QuantizationError(f"cannot read calibration text {text_file}: {exc}") from None
    else:
        text, source = default_calibration_text(tokens * 6), "edgellm-mix"
    ids = tok.encode(text, add_special_tokens=False).ids
    n_seq = min(tokens, len(ids)) // seq_len
    if n_seq < 1:
        raise QuantizationError(f"the calibration text has {len(ids)} tokens; {seq_len} at least are needed",
                                "pass a longer --calibration-text")
    return CalibrationSet(np.asarray(ids[: n_seq * seq_len], np.int64).reshape(n_seq, seq_len), source)


class Calibrator:
    """Runs the calibration tokens through the family's block one layer at a time (numpy ops), quantizing
    each linear against its input's Hessian as it goes."""

    def __init__(self, family: Family, args: Any, calib: CalibrationSet, quantize: Quantizer) -> None:
        self.family, self.args, self.calib, self.quantize = family, args, calib, quantize
        self.h: np.ndarray | None = None          # residual stream [B, S, D]
        self.delta: np.ndarray | None = None      # the last block's output, not yet added

    def embed(self, table: Any, scale: float | None = None) -> None:
        """Start from the embedding rows of the calibration ids (as the graph will see them). table: an array
        [vocab, D] or anything indexable by an id array the same way (onnx_stream.Source reads rows by slices)."""
        h = np.asarray(table[self.calib.ids], dtype=np.float32)                 # [B, S, D]
        self.h = h if scale is None else (h * np.float32(scale)).astype(np.float32)

    def layer(self, i: int, weights: dict[str, np.ndarray], ops: NumpyOps | None = None) -> dict[str, BlockQuant]:
        """Quantize layer i's linears against their calibration inputs; advance the hidden states.

        ops: the numpy ops to run the block with (the importance-matrix pass passes recording ones)."""
        if self.h is None:
            raise QuantizationError("Calibrator.layer called before embed()")
        ops = NumpyOps(self.quantize) if ops is None else ops
        self.h, self.delta = self.family.block(ops, self.args, i, weights, self.h, self.delta)
        return ops.quantized

    def final_input(self, norm: np.ndarray) -> np.ndarray:
        """The LM head's input [B, S, D]: the final norm of the last hidden states."""
        if self.h is None:
            raise QuantizationError("Calibrator.final_input called before embed()")
        x, _ = NumpyOps().add_norm(self.h, self.delta, norm, self.args.eps, "norm")
        return x

    def final_hessian(self, norm: np.ndarray) -> np.ndarray:
        """X^T X of the LM head's input."""
        return hessian(self.final_input(norm))
