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
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import ConversionError, QuantizationError
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
log = logging.getLogger(__name__)

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


def _openblas() -> Any:
    """numpy's OpenBLAS as a ctypes library (the one mapped into this process), or None (another BLAS, or
    not Linux)."""
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            get = getattr(lib, prefix + "get_num_threads64_", None) or getattr(lib, prefix + "get_num_threads", None)
            put = getattr(lib, prefix + "set_num_threads64_", None) or getattr(lib, prefix + "set_num_threads", None)
            if get is not None and put is not None:
                return get, put
    return None


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """numpy's BLAS limited to `n` threads inside the block (OpenBLAS; a no-op for any other BLAS).

    The calibration pass runs its own threads (GPTQ row slices, the Hessian factor's halves): BLAS threads on
    top of them oversubscribe the cores, and on a loaded machine each small BLAS/LAPACK call then waits for a
    scheduler slice (a 128 x 128 inverse took 200 ms instead of 0.2 ms here). Process-wide while it lasts."""
    calls = _openblas()
    if calls is None:
        yield
        return
    get, put = calls
    before = int(get())
    put(n)
    try:
        yield
    finally:
        put(before)


@dataclass
class LayerCost:
    """One calibrated layer: the tokens it ran on, its wall seconds, and the part spent quantizing (GPTQ:
    factoring Hessians, the column loop), which does not depend on the token count."""
    layer: int
    tokens: int
    seconds: float
    quantize_s: float
    weights: int                      # elements of the weights quantized in the layer


@dataclass
class CalibrationLog:
    """What the pass did, filled in as it runs (read for progress lines and the manifest)."""
    layers: list[LayerCost] = field(default_factory=list)
    started: float | None = None      # time.perf_counter() at embed()
    projected_s: float | None = None  # the whole pass (layers + LM head) at the pace measured so far
    over_budget: bool = False         # the budget cannot be met even with one sequence (GPTQ's fixed cost)

    @property
    def tokens_min(self) -> int:
        return min((c.tokens for c in self.layers), default=0)

    @property
    def seconds(self) -> float:
        return float(sum(c.seconds for c in self.layers))

    def summary(self) -> dict[str, Any]:
        return {"tokens_min": self.tokens_min, "layers_s": round(self.seconds, 1),
                "quantize_s": round(sum(c.quantize_s for c in self.layers), 1), "over_budget": self.over_budget}


@dataclass(frozen=True)
class CalibrationSet:
    ids: np.ndarray      # int64 [sequences, seq_len]
    source: str          # where the text came from, for the manifest
    # calibration_time: a budget in seconds for the whole pass (see Calibrator.fit_budget), None: no budget
    time_budget_s: float | None = None
    head_weights: int = 0           # elements of a GPTQ LM head quantized after the layers (for the projection)
    log: CalibrationLog = field(default_factory=CalibrationLog, compare=False)

    @property
    def tokens(self) -> int:
        return int(self.ids.size)


def check_time_budget(seconds: Any) -> float | None:
    """`calibration_time` as given to a converter: None, or a positive number of seconds."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ConversionError(f"calibration_time={seconds!r} must be a positive number of seconds",
                              "pass a time budget in seconds, e.g. calibration_time=600 (--calibration-time 600)")
    return float(seconds)


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
    each linear against its input's Hessian as it goes.

    With a time budget (`CalibrationSet.time_budget_s`), the token count is an upper bound: after each layer
    the pass projects the rest from what it measured (a per-token part: the forward pass and the Hessians; a
    fixed part: GPTQ's factoring and column loop, which no token count changes, also for the LM head) and keeps
    the largest number of whole sequences that fits, dropping the others from the residual stream for the
    layers left (the first layer always runs on every token). When even one sequence does not fit, GPTQ
    still runs on every layer with one sequence and a warning gives the projected overrun: the budget never
    changes the recipe or the layout, only the tokens the Hessians see."""

    def __init__(self, family: Family, args: Any, calib: CalibrationSet, quantize: Quantizer) -> None:
        self.family, self.args, self.calib, self.quantize = family, args, calib, quantize
        self.h: np.ndarray | None = None          # residual stream [B, S, D]
        self.delta: np.ndarray | None = None      # the last block's output, not yet added
        self._quantize_s = 0.0
        self._weights = 0

    def embed(self, table: Any, scale: float | None = None) -> None:
        """Start from the embedding rows of the calibration ids (as the graph will see them). table: an array
        [vocab, D] or anything indexable by an id array the same way (onnx_stream.Source reads rows by slices)."""
        self.calib.log.started = time.perf_counter()
        h = np.asarray(table[self.calib.ids], dtype=np.float32)                 # [B, S, D]
        self.h = h if scale is None else (h * np.float32(scale)).astype(np.float32)

    def _timed(self, name: str, w: np.ndarray, h: np.ndarray) -> BlockQuant | None:
        t0 = time.perf_counter()
        out = self.quantize(name, w, h)
        self.credit(time.perf_counter() - t0, int(w.size) if out is not None else 0)
        return out

    def credit(self, seconds: float, weights: int) -> None:
        """Count `seconds` of the current layer as quantization work on `weights` elements: work that does not
        shrink with fewer calibration sequences (ops that quantize on their own, like GGUF GPTQ's, report it)."""
        self._quantize_s += seconds
        self._weights += weights

    def layer(self, i: int, weights: dict[str, np.ndarray], ops: NumpyOps | None = None) -> dict[str, BlockQuant]:
        """Quantize layer i's linears against their calibration inputs; advance the hidden states.

        ops: the numpy ops to run the block with (the importance-matrix pass passes recording ones)."""
        if self.h is None:
            raise QuantizationError("Calibrator.layer called before embed()")
        ops = NumpyOps(self._timed) if ops is None else ops
        self._quantize_s, self._weights = 0.0, 0
        tokens = int(self.h.shape[0] * self.h.shape[1])
        t0 = time.perf_counter()
        self.h, self.delta = self.family.block(ops, self.args, i, weights, self.h, self.delta)
        self.calib.log.layers.append(LayerCost(i, tokens, time.perf_counter() - t0, self._quantize_s,
                                               self._weights))
        self.fit_budget(i)
        return ops.quantized

    def fit_budget(self, i: int) -> None:
        """After layer i: project the pass and, under a time budget, keep the sequences that fit (see the class)."""
        log_ = self.calib.log
        done = log_.layers
        left = int(self.args.layers) - i - 1
        if not done or self.h is None or log_.started is None:
            return
        elapsed = time.perf_counter() - log_.started
        fixed = sum(c.quantize_s for c in done) / len(done)                    # seconds per layer
        per_token = sum((c.seconds - c.quantize_s) / max(1, c.tokens) for c in done) / len(done)
        per_weight = sum(c.quantize_s for c in done) / max(1, sum(c.weights for c in done))
        head = per_weight * self.calib.head_weights
        n_seq, seq = int(self.h.shape[0]), int(self.h.shape[1])
        log_.projected_s = elapsed + left * (fixed + per_token * n_seq * seq) + head
        budget = self.calib.time_budget_s
        if budget is None or left == 0:
            return
        spare = budget - elapsed - head - left * fixed                        # for the per-token work
        fit = int(spare // (left * per_token * seq)) if spare > 0 and per_token > 0 else 0
        keep = max(1, min(n_seq, fit))
        if fit < 1 and not log_.over_budget:
            log_.over_budget = True
            log.warning("calibration budget %.0f s cannot be met: GPTQ's own arithmetic needs about %.0f s per "
                        "layer (%.0f s for the rest and the LM head); continuing with one %d-token sequence",
                        budget, fixed, left * fixed + head, seq)
        if keep < n_seq:
            self.h = np.ascontiguousarray(self.h[:keep])
            self.delta = None if self.delta is None else np.ascontiguousarray(self.delta[:keep])
            log_.projected_s = elapsed + left * (fixed + per_token * keep * seq) + head
            log.info("calibration budget %.0f s: %d of %d sequences kept after layer %d (projected %.0f s)",
                     budget, keep, n_seq, i, log_.projected_s)

    def final_input(self, norm: np.ndarray) -> np.ndarray:
        """The LM head's input [B, S, D]: the final norm of the last hidden states."""
        if self.h is None:
            raise QuantizationError("Calibrator.final_input called before embed()")
        x, _ = NumpyOps().add_norm(self.h, self.delta, norm, self.args.eps, "norm")
        return x

    def final_hessian(self, norm: np.ndarray) -> np.ndarray:
        """X^T X of the LM head's input."""
        return hessian(self.final_input(norm))
