"""Calibration for GPTQ: a text, its token ids, and a numpy forward pass of the Llama block layout that
collects each linear layer's input Hessian (X^T X) one decoder layer at a time.

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
from typing import Callable, Sequence

import numpy as np

from ..errors import QuantizationError
from .hf import ModelConfig
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

# (name, weight [N, K], H [K, K]) -> its quantization, or None when the weight stays in float
Quantizer = Callable[[str, np.ndarray, np.ndarray], "BlockQuant | None"]


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


def _rms(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight).astype(np.float32)


def _hessian(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1, x.shape[-1]).astype(np.float32)
    return (flat.T @ flat).astype(np.float64) / flat.shape[0]


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-np.clip(x, -60, 60)))


@dataclass
class LayerWeights:
    ln1: np.ndarray
    qkv: np.ndarray
    qkv_bias: np.ndarray | None
    o: np.ndarray
    ln2: np.ndarray
    gate_up: np.ndarray
    down: np.ndarray


class Calibrator:
    """Runs the calibration tokens through the decoder one layer at a time, quantizing as it goes."""

    def __init__(self, config: ModelConfig, calib: CalibrationSet, cos: np.ndarray, sin: np.ndarray,
                 quantize: Quantizer) -> None:
        self.c, self.calib, self.quantize = config, calib, quantize
        seq = calib.ids.shape[1]
        self.cos = np.concatenate([cos[:seq], cos[:seq]], -1)[None, None]   # [1, 1, S, hd]
        self.sin = np.concatenate([sin[:seq], sin[:seq]], -1)[None, None]
        self.h: np.ndarray | None = None

    def embed(self, table: np.ndarray) -> None:
        """Start from the embedding rows of the calibration ids (as the graph will see them)."""
        self.h = np.asarray(table[self.calib.ids], dtype=np.float32)           # [B, S, D]

    def _attention(self, qkv: np.ndarray) -> np.ndarray:
        c = self.c
        b, s, _ = qkv.shape
        h, kv, hd = c.num_heads, c.num_kv_heads, c.head_dim
        q = qkv[..., : h * hd].reshape(b, s, h, hd).transpose(0, 2, 1, 3)
        k = qkv[..., h * hd:(h + kv) * hd].reshape(b, s, kv, hd).transpose(0, 2, 1, 3)
        v = qkv[..., (h + kv) * hd:].reshape(b, s, kv, hd).transpose(0, 2, 1, 3)

        def rope(x: np.ndarray) -> np.ndarray:
            rot = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], -1)
            return x * self.cos + rot * self.sin

        q, k = rope(q), rope(k)
        groups = h // kv
        k = np.repeat(k, groups, axis=1)
        v = np.repeat(v, groups, axis=1)
        scores = (q @ k.transpose(0, 1, 3, 2)) / np.sqrt(hd)
        scores = scores + np.triu(np.full((s, s), -np.inf, np.float32), 1)
        scores -= scores.max(-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(-1, keepdims=True)
        return (p @ v).transpose(0, 2, 1, 3).reshape(b, s, h * hd).astype(np.float32)

    def _linear(self, name: str, x: np.ndarray, w: np.ndarray, out: dict[str, BlockQuant], key: str) -> np.ndarray:
        """x @ Q(w).T, with Q chosen by the quantizer against x's Hessian."""
        bq = self.quantize(name, w, _hessian(x))
        if bq is not None:
            out[key] = bq
            w = bq.dequantize()
        return (x @ w.T).astype(np.float32)

    def layer(self, i: int, w: LayerWeights) -> dict[str, BlockQuant]:
        """Quantize layer i's four linears against their calibration inputs; advance the hidden states."""
        if self.h is None:
            raise QuantizationError("Calibrator.layer called before embed()")
        eps, out, p = self.c.rms_norm_eps, {}, f"layers.{i}."
        x = _rms(self.h, w.ln1, eps)
        qkv = self._linear(p + "attn.qkv_proj", x, w.qkv, out, "qkv")
        attn = self._attention(qkv + (0 if w.qkv_bias is None else w.qkv_bias))
        self.h = self.h + self._linear(p + "attn.o_proj", attn, w.o, out, "o")
        x = _rms(self.h, w.ln2, eps)
        gate, up = np.split(self._linear(p + "mlp.gate_up_proj", x, w.gate_up, out, "gate_up"), 2, axis=-1)
        act = (_silu(gate) * up).astype(np.float32)
        self.h = (self.h + self._linear(p + "mlp.down_proj", act, w.down, out, "down")).astype(np.float32)
        return out

    def final_hessian(self, norm: np.ndarray) -> np.ndarray:
        """X^T X of the LM head's input (the final norm of the last hidden states)."""
        if self.h is None:
            raise QuantizationError("Calibrator.final_hessian called before embed()")
        return _hessian(_rms(self.h, norm, self.c.rms_norm_eps))
