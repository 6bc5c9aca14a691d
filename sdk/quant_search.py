"""Measured auto-quant: convert a short ladder of candidates, measure each on this device against a
high-precision reference (mean KLD, perplexity increase, top-1 agreement, decode tokens/s, size), keep
the smallest (or fastest) one meeting the budget and record the whole table in its manifest
(`Manifest.extra["autoquant"]`). When none meets the budget, refuse with the measured table.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .converters.manifest import MANIFEST_NAME
from .devices.planner import QUANT_LADDER
from .errors import BudgetNotMetError, EdgeLLMError, OutputPathError
from .progress import ProgressArg, Reporter, reporter

log = logging.getLogger(__name__)

# The default candidates are the planner's quant ladder (devices.planner.QUANT_LADDER, the one ladder), best
# quality first, less the unquantized reference and the rungs whose published loss is beyond any sensible budget.
AUTOQUANT_MAX_LISTED_LOSS = 0.1   # Q2_K (14.7% on LLaMA-7B) is tried only when asked for by name


def _ladder(fmt: str) -> tuple[str, ...]:
    return tuple(o.name for o in QUANT_LADDER if o.format == fmt and 0.0 < o.quality_loss <= AUTOQUANT_MAX_LISTED_LOSS)


GGUF_LADDER: tuple[str, ...] = _ladder("gguf")   # Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q3_K_M
ONNX_LADDER: tuple[str, ...] = _ladder("onnx")   # int8, int4
SPEED_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


@dataclass
class Candidate:
    format: str
    quant: str
    size_bytes: int | None = None
    kld: float | None = None
    ppl: float | None = None
    ppl_increase: float | None = None
    top1: float | None = None
    decode_tps: float | None = None
    meets: bool = False
    why_not: str = ""          # which budget it misses, or the error that stopped it
    path: str = field(default="", repr=False)


@dataclass
class AutoQuantResult:
    chosen: Candidate
    output: Path
    reference: dict[str, Any]
    table: list[Candidate]
    budget: dict[str, float | None]

    @property
    def path(self) -> Path:
        """The kept artifact's model file (what `edgellm convert` prints)."""
        from .converters.manifest import read_manifest

        return self.output / read_manifest(self.output).file

    @property
    def manifest_path(self) -> Path:
        return self.output / MANIFEST_NAME

    def format_table(self) -> str:
        return format_table(self.table, self.chosen)


def format_table(table: Sequence[Candidate], chosen: Candidate | None = None) -> str:
    lines = ["| candidate | size MiB | mean KLD | PPL | PPL vs ref | top-1 | decode tok/s | verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in table:
        def f(x: float | None, fmt: str) -> str:
            return "n/a" if x is None else format(x, fmt)

        verdict = "**kept**" if c is chosen else ("meets" if c.meets else c.why_not)
        lines.append(f"| {c.format}:{c.quant} | {f(c.size_bytes and c.size_bytes / 2**20, '.1f')} | "
                     f"{f(c.kld, '.4f')} | {f(c.ppl, '.3f')} | "
                     f"{f(c.ppl_increase and c.ppl_increase * 100, '+.2f')}{'' if c.ppl_increase is None else ' %'} | "
                     f"{f(c.top1 and c.top1 * 100, '.1f')}{'' if c.top1 is None else ' %'} | "
                     f"{f(c.decode_tps, '.1f')} | {verdict} |")
    return "\n".join(lines)


def _onnx_names() -> frozenset[str]:
    try:
        from .converters.onnx import ONNX_QUANTS
    except ImportError:
        return frozenset(ONNX_LADDER)
    return frozenset(ONNX_QUANTS)


def _decode_tps(path: str | Path, threads: int | None, tokens: int) -> float | None:
    from .loading import load

    with load(path, threads=threads, n_ctx=512) as m:
        messages = [{"role": "user", "content": SPEED_PROMPT}]
        m.chat(messages, max_tokens=4, temperature=0.0)  # warm-up
        return m.chat(messages, max_tokens=tokens, temperature=0.0).metrics.decode_tps


def _misses(c: Candidate, max_kld: float | None, max_ppl_increase: float | None, min_tps: float | None) -> str:
    why = []
    if max_kld is not None and (c.kld is None or c.kld > max_kld):
        why.append(f"KLD {c.kld:.4f} > {max_kld}" if c.kld is not None else "no KLD")
    if max_ppl_increase is not None and (c.ppl_increase is None or c.ppl_increase > max_ppl_increase):
        why.append(f"PPL +{(c.ppl_increase or 0) * 100:.2f} % > {max_ppl_increase * 100:.2f} %")
    if min_tps is not None and (c.decode_tps is None or c.decode_tps < min_tps):
        why.append(f"{c.decode_tps or 0:.1f} tok/s < {min_tps}")
    return "; ".join(why)


def autoquant(model: str | Path, output: str | Path, max_kld: float | None = None,
              max_ppl_increase: float | None = None, min_tps: float | None = None,
              formats: Sequence[str] = ("gguf",), *, candidates: Sequence[str] | None = None,
              reference: str | Path | None = None, reference_quant: str = "F16", prefer: str = "smallest",
              text: str | None = None, max_tokens: int = 256, threads: int | None = None,
              speed_tokens: int = 32, progress: ProgressArg | Reporter = None,
              **convert_options: Any) -> AutoQuantResult:
    """Convert the HF folder `model` at each candidate quant, measure, and keep the best into `output`.

    candidates: quant names (GGUF names, or ONNX recipe names when formats includes "onnx"); default the
    ladder of each format. reference: an existing high-precision artifact of the same model; default:
    convert `model` at `reference_quant`. prefer: "smallest" or "fastest" among those meeting the budget.
    convert_options go to the converter (pre_tokenizer, context_length, ONNX recipe options).
    progress: see edgellm.progress; each candidate's conversion and measurement is reported, and the measured
    table is shown at the end (`result.format_table()` returns it).
    Raises BudgetNotMetError (its `.table` holds every measured row) when none meets the budget."""
    from .converting import convert
    from .evaluation import evaluate, reference_scores

    if prefer not in ("smallest", "fastest"):
        raise EdgeLLMError(f"prefer={prefer!r}", "choose 'smallest' or 'fastest'")
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise OutputPathError(f"{out} exists and is not empty", "choose a new output folder")
    plan: list[tuple[str, str]] = []
    for fmt in formats:
        ladder = GGUF_LADDER if fmt == "gguf" else ONNX_LADDER if fmt == "onnx" else None
        if ladder is None:
            raise EdgeLLMError(f"unknown format {fmt!r}", "formats are 'gguf' and 'onnx'")
        names = [q for q in candidates if (q in _onnx_names()) == (fmt == "onnx")] if candidates else ladder
        plan.extend((fmt, q) for q in names)
    if not plan:
        raise EdgeLLMError("no candidates to try", f"GGUF: {', '.join(GGUF_LADDER)}; ONNX: {', '.join(ONNX_LADDER)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    budget = {"max_kld": max_kld, "max_ppl_increase": max_ppl_increase, "min_tps": min_tps}
    rep = reporter(progress)
    with tempfile.TemporaryDirectory(prefix=".edgellm-autoquant-", dir=out.parent) as tmp:
        work = Path(tmp)
        ref_info: dict[str, Any]
        if reference is None:   # built here and removed with the work folder: the manifest names how, not where
            ref_path: str | Path = convert(model, work / f"ref-{reference_quant}", format="gguf", quant=reference_quant,
                               progress=rep.child("[reference] ")).path
            ref_info = {"artifact": None, "built_from": str(Path(model).resolve()), "format": "gguf",
                        "temporary": True}
        else:
            ref_path = reference
            ref_info = {"artifact": str(Path(reference).resolve()), "temporary": False}
        with rep.stage("[reference] scoring", unit="tokens") as st:
            ref = reference_scores(ref_path, text=text, max_tokens=max_tokens, n_ctx=max_tokens + 1,
                                   threads=threads)
            st.update(len(ref.tokens))
        ref_info.update({"quant": reference_quant, "tokens": len(ref.tokens)})
        table: list[Candidate] = []
        for k, (fmt, quant) in enumerate(plan, 1):
            cand = Candidate(fmt, quant)
            table.append(cand)
            folder = work / f"{fmt}-{quant}"
            sub = rep.child(f"[{k}/{len(plan)}] {fmt}:{quant}: ")
            try:
                convert(model, folder, format=fmt, quant=quant, threads=threads, progress=sub, **convert_options)
                cand.path = str(folder)
                cand.size_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.suffix != ".json")
                with sub.stage("measuring KLD, perplexity and decode speed") as st:
                    r = evaluate(folder, ref, threads=threads)
                    cand.kld, cand.ppl, cand.top1, cand.ppl_increase = r.kld_mean, r.ppl, r.top1, r.ppl_increase
                    ref_info["ppl"] = r.ref_ppl
                    cand.decode_tps = _decode_tps(folder, threads, speed_tokens)
                    st.close(f"KLD {cand.kld or 0:.4f}, {cand.decode_tps or 0:.1f} tok/s")
            except EdgeLLMError as exc:
                cand.why_not = f"failed: {exc.message}"
                log.warning("autoquant candidate %s:%s failed: %s", fmt, quant, exc.message)
                continue
            cand.why_not = _misses(cand, max_kld, max_ppl_increase, min_tps)
            cand.meets = not cand.why_not
            log.info("autoquant %s:%s: %.1f MiB, KLD %.4f, %.1f tok/s, %s", fmt, quant, cand.size_bytes / 2**20,
                     cand.kld or 0, cand.decode_tps or 0, "meets" if cand.meets else cand.why_not)
        ok = [c for c in table if c.meets]
        if not ok:
            raise BudgetNotMetError(f"no candidate meets the budget {budget}:\n{format_table(table)}",
                                    table=[asdict(c) for c in table])
        key = (lambda c: (c.size_bytes, -(c.decode_tps or 0))) if prefer == "smallest" else (
            lambda c: (-(c.decode_tps or 0), c.size_bytes))
        chosen = min(ok, key=key)
        shutil.move(chosen.path, out)
        _record(out, chosen, table, ref_info, budget, prefer)
    chosen.path = str(out)
    result = AutoQuantResult(chosen, out, ref_info, table, budget)
    rep.note("autoquant: measured candidates (reference " + f"gguf:{reference_quant}, {len(ref.tokens)} tokens)\n"
             + result.format_table())
    return result


def _record(out: Path, chosen: Candidate, table: list[Candidate], ref: dict[str, Any],
            budget: dict[str, float | None], prefer: str) -> None:
    from .converters.manifest import read_manifest, write_manifest

    m = read_manifest(out)
    rows = [{k: v for k, v in asdict(c).items() if k != "path"} for c in table]
    m.extra = {**m.extra, "autoquant": {"chosen": f"{chosen.format}:{chosen.quant}", "prefer": prefer,
                                         "budget": budget, "reference": ref, "candidates": rows}}
    write_manifest(out, m)
    log.info("autoquant kept %s:%s; table in %s", chosen.format, chosen.quant, json.dumps(m.extra["autoquant"])[:80])
