"""Quality of an artifact: perplexity on a text and, against a reference artifact, the mean KL divergence
and top-1 agreement of the next-token distributions on the very same token ids.

Long texts are cut into windows that fit the context; every window starts with BOS (when the model adds
one) and every position after the first is scored. With no text given, a default text is assembled at run
time from the documentation strings of Python's standard library on this machine, so nothing third-party
is copied into edgellm and the text is the same for every artifact evaluated on one machine.
"""
from __future__ import annotations

import logging
import math
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import EvaluationError
from .model import Model
from .progress import ProgressArg, Reporter, reporter

log = logging.getLogger(__name__)

# Standard-library modules whose docstrings make the default evaluation text (English prose about code).
DEFAULT_TEXT_MODULES: tuple[str, ...] = (
    "argparse", "json", "logging", "collections", "functools", "itertools", "pathlib", "subprocess",
    "textwrap", "csv", "statistics", "random", "heapq", "bisect", "difflib", "fractions", "decimal",
    "datetime", "calendar", "string", "shutil", "tempfile", "zipfile", "tarfile", "threading", "queue",
    "sched", "contextlib", "dataclasses", "enum", "typing", "unittest", "doctest", "pickle", "shelve",
)


def default_text(min_chars: int = 12000, modules: Sequence[str] = DEFAULT_TEXT_MODULES) -> str:
    """Docstrings of installed standard-library modules and their public callables, in a fixed order."""
    from .converters.calibration import docstring_text

    text = docstring_text(modules, min_chars)
    if not text:
        raise EvaluationError("no documentation strings found to build a default text", "pass --text-file FILE")
    return text


@dataclass(frozen=True)
class EvalResult:
    artifact: str
    tokens: int                    # scored positions
    ppl: float
    nll: float                     # mean negative log-likelihood (nats/token)
    reference: str | None = None
    ref_ppl: float | None = None
    kld_mean: float | None = None  # mean KL(reference || model) per position, nats
    kld_p99: float | None = None
    kld_max: float | None = None
    top1: float | None = None      # share of positions where both pick the same most likely token
    windows: int = 0

    @property
    def ppl_increase(self) -> float | None:
        """Relative perplexity increase over the reference (0.01 = 1 %)."""
        return None if self.ref_ppl is None else self.ppl / self.ref_ppl - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ppl_increase": self.ppl_increase}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64, copy=False)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def windows(ids: Sequence[int], size: int, bos: int | None) -> Iterator[list[int]]:
    """Consecutive windows of at most `size` tokens; each starts with `bos` (when given) then new text."""
    body = list(ids[1:]) if bos is not None and ids and ids[0] == bos else list(ids)
    step = size - (1 if bos is not None else 0)
    if step < 2:
        raise EvaluationError(f"a window of {size} tokens is too small", "use a context of at least 16 tokens")
    for i in range(0, len(body), step):
        chunk = body[i:i + step]
        if len(chunk) + (1 if bos is not None else 0) >= 2:
            yield ([bos] if bos is not None else []) + chunk


def _open(model: str | Path | Model, stack: ExitStack, n_ctx: int, threads: int | None) -> Model:
    if isinstance(model, Model):
        return model
    from .loading import load

    return stack.enter_context(load(model, n_ctx=n_ctx, threads=threads))


def evaluation_ids(model: Model, text: str | None, max_tokens: int) -> list[int]:
    ids = model.tokenize(text if text is not None else default_text())
    if len(ids) < 2:
        raise EvaluationError("the evaluation text is shorter than two tokens", "pass a longer text")
    return ids[:max_tokens]


@dataclass
class ReferenceScores:
    """A reference model's log-probabilities on fixed token ids, computed once and compared many times."""
    artifact: str
    tokens: list[int]
    size: int
    bos: int | None
    log_probs: list[np.ndarray]  # per window: (len(window) - 1, vocab) float32


def _name(model: str | Path | Model) -> str:
    return Path(str(getattr(model, "artifact", model))).name


def reference_scores(reference: str | Path | Model, ids: Sequence[int] | None = None, *, text: str | None = None,
                     max_tokens: int = 1024, n_ctx: int = 512, threads: int | None = None,
                     progress: ProgressArg | Reporter = None) -> ReferenceScores:
    """progress: see edgellm.progress (one stage, "reference NAME", counted in scored tokens)."""
    rep = reporter(progress)
    with ExitStack() as stack:
        r = _open(reference, stack, n_ctx, threads)
        tokens = list(ids) if ids is not None else evaluation_ids(r, text, max_tokens)
        info = r.runtime.tokenizer_info
        bos = info.bos_id if info.add_bos else None
        size = min(n_ctx, r.n_ctx)
        wins = list(windows(tokens, size, bos))
        lps: list[np.ndarray] = []
        with rep.stage(f"reference {_name(reference)}", sum(len(w) - 1 for w in wins), "tokens") as st:
            for w in wins:
                lps.append(_log_softmax(r.logits(w)[:-1]).astype(np.float32))
                st.advance(len(w) - 1)
        return ReferenceScores(str(getattr(r, "artifact", reference)), tokens, size, bos, lps)


def evaluate(model: str | Path | Model, reference: str | Path | Model | ReferenceScores | None = None, *,
             text: str | None = None, ids: Sequence[int] | None = None, max_tokens: int = 1024, n_ctx: int = 512,
             threads: int | None = None, progress: ProgressArg | Reporter = None) -> EvalResult:
    """Perplexity of `model` on `text` (or token `ids`); with `reference`, KLD and top-1 agreement too.

    `reference` may be precomputed `ReferenceScores` (then its token ids and window size are used).
    progress: see edgellm.progress (a stage per model scored, counted in tokens; None: shown on a terminal)."""
    rep = reporter(progress)
    with ExitStack() as stack:
        ref: ReferenceScores | None = None
        if isinstance(reference, ReferenceScores):
            ref = reference
            n_ctx = ref.size
        m = _open(model, stack, n_ctx, threads)
        if reference is not None and not isinstance(reference, ReferenceScores):
            ref = reference_scores(reference, ids, text=text, max_tokens=max_tokens, n_ctx=min(n_ctx, m.n_ctx),
                                   threads=threads, progress=rep)
        if ref is not None:
            tokens, size, bos = ref.tokens, ref.size, ref.bos
        else:
            tokens = list(ids) if ids is not None else evaluation_ids(m, text, max_tokens)
            info = m.runtime.tokenizer_info
            size, bos = min(n_ctx, m.n_ctx), (info.bos_id if info.add_bos else None)
        nll: list[np.ndarray] = []
        ref_nll: list[np.ndarray] = []
        kld: list[np.ndarray] = []
        agree = 0
        wins = list(windows(tokens, size, bos))
        n_windows = len(wins)
        stage = rep.stage(f"scoring {_name(model)}", sum(len(w) - 1 for w in wins), "tokens")
        for i, win in enumerate(wins):
            target = np.asarray(win[1:])
            lp = _log_softmax(m.logits(win)[:-1])               # (len(win) - 1, vocab)
            nll.append(-lp[np.arange(len(target)), target])
            if ref is not None:
                rlp = ref.log_probs[i].astype(np.float64)
                if rlp.shape != lp.shape:
                    raise EvaluationError(f"vocabularies differ: {rlp.shape[1]} vs {lp.shape[1]} tokens",
                                          "compare artifacts of the same model")
                ref_nll.append(-rlp[np.arange(len(target)), target])
                kld.append((np.exp(rlp) * (rlp - lp)).sum(axis=-1))
                agree += int((rlp.argmax(-1) == lp.argmax(-1)).sum())
            stage.advance(len(win) - 1)
        all_nll = np.concatenate(nll)
        n = int(all_nll.size)
        stage.close(f"PPL {math.exp(float(all_nll.mean())):.3f}")
        result: dict[str, Any] = {"artifact": str(getattr(m, "artifact", model)), "tokens": n,
                                  "nll": float(all_nll.mean()), "ppl": math.exp(float(all_nll.mean())),
                                  "windows": n_windows}
        if ref is not None:
            k = np.maximum(np.concatenate(kld), 0.0)
            result.update(reference=ref.artifact, ref_ppl=math.exp(float(np.concatenate(ref_nll).mean())),
                          kld_mean=float(k.mean()), kld_p99=float(np.percentile(k, 99)), kld_max=float(k.max()),
                          top1=agree / n)
        log.info("evaluated %s on %d tokens: ppl %.3f", result["artifact"], n, result["ppl"])
        return EvalResult(**result)


def format_table(results: Sequence[EvalResult], names: Sequence[str] | None = None) -> str:
    """A Markdown table of evaluation results."""
    names = list(names) if names is not None else [Path(r.artifact).name for r in results]
    rows = ["| artifact | tokens | PPL | PPL vs ref | mean KLD | KLD p99 | top-1 agree |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in zip(names, results):
        inc = "" if r.ppl_increase is None else f"{r.ppl_increase * 100:+.2f} %"
        kld = "" if r.kld_mean is None else f"{r.kld_mean:.5f}"
        p99 = "" if r.kld_p99 is None else f"{r.kld_p99:.4f}"
        top1 = "" if r.top1 is None else f"{r.top1 * 100:.2f} %"
        rows.append(f"| {name} | {r.tokens} | {r.ppl:.3f} | {inc} | {kld} | {p99} | {top1} |")
    return "\n".join(rows)
