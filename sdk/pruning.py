"""Layer pruning for GGUF artifacts: rank transformer blocks by the KL divergence their removal costs on a
calibration text, drop the cheapest, and report size, speed and quality against the unpruned artifact.

Blocks are removed by llama.cpp's own quantizer in copy-only mode (`params.prune_layers`, a -1-terminated
int32 list): it keeps every other tensor's type, renumbers the remaining blocks and rewrites
`<arch>.block_count`. Pruning that cannot keep its quality budget is refused with the measured table.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence, SupportsInt, cast

from .errors import BudgetNotMetError, EdgeLLMError
from .evaluation import EvalResult, evaluate, reference_scores
from .progress import ProgressArg, Reporter, reporter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerCost:
    layer: int
    kld: float       # mean KL(original || without this layer), nats/token
    ppl: float
    top1: float


@dataclass
class PruneResult:
    output: Path | None
    dropped: tuple[int, ...]
    size_before: int
    size_after: int
    kld: float
    ppl_before: float
    ppl_after: float
    top1: float
    decode_tps_before: float | None = None
    decode_tps_after: float | None = None
    ranking: list[LayerCost] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)   # each measured set of dropped layers

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output"] = str(self.output) if self.output else None
        return d

    def format_table(self) -> str:
        """The measured tables: each block's cost alone (the ranking), then each set of blocks dropped together."""
        lines = []
        if self.ranking:
            lines += ["| layer dropped alone | mean KLD | PPL | top-1 |", "|---:|---:|---:|---:|"]
            lines += [f"| {c.layer} | {c.kld:.4f} | {c.ppl:.3f} | {c.top1 * 100:.1f} % |" for c in self.ranking]
            lines.append("")
        lines += [f"| layers dropped together | mean KLD | PPL (base {self.ppl_before:.3f}) | PPL vs base | top-1 "
                  "| within budget |", "|---|---:|---:|---:|---:|---|"]
        for t in self.trials:
            lines.append(f"| {', '.join(map(str, t['dropped']))} | {t['kld'] or 0:.4f} | {t['ppl']:.3f} | "
                         f"{t['ppl_increase'] * 100:+.2f} % | {(t['top1'] or 0) * 100:.1f} % | "
                         f"{'yes' if t['within_budget'] else 'no'} |")
        return "\n".join(lines)


def format_ranking(ranking: Sequence[LayerCost]) -> str:
    return PruneResult(None, (), 0, 0, 0.0, 0.0, 0.0, 0.0, ranking=list(ranking)).format_table().split("\n\n")[0]


def gguf_file(model: str | Path) -> Path:
    """The .gguf file of an artifact folder or path; pruning works on GGUF only."""
    from .loading import resolve_artifact

    art = resolve_artifact(model)
    if art.format != "gguf":
        raise EdgeLLMError(f"{model} is {art.format}; layer pruning works on GGUF artifacts",
                           "convert to GGUF first: edgellm convert MODEL OUT --format gguf")
    return art.path


def block_count(path: Path) -> int:
    import gguf

    reader = gguf.GGUFReader(str(path))
    for name, f in reader.fields.items():
        if name.endswith(".block_count"):
            return int(f.parts[f.data[0]][0])
    raise EdgeLLMError(f"{path} has no block_count key")


def drop_layers(src: Path, dst: Path, layers: Sequence[int], threads: int | None = None) -> Path:
    """Write `dst`: `src` without the given blocks (types unchanged), via llama.cpp's quantizer."""
    from .converters.llama_quantize import quantize_gguf
    from .errors import QuantizationError

    n = block_count(src)
    bad = [i for i in layers if not 0 <= i < n]
    if bad or not layers or len(set(layers)) >= n:
        raise EdgeLLMError(f"cannot drop layers {sorted(layers)} of a {n}-layer model",
                           f"name between 1 and {n - 1} distinct layers in 0..{n - 1}")
    try:  # copy-only: every tensor keeps its type; the ftype of the source is kept too
        quantize_gguf(src, dst, 0, threads=threads or 1, only_copy=True, prune_layers=layers)
    except QuantizationError as exc:
        raise EdgeLLMError(f"llama.cpp could not drop layers {sorted(layers)} from {src}: {exc.message}") from None
    if not dst.is_file():
        raise EdgeLLMError(f"llama.cpp wrote no file when dropping layers {sorted(layers)} from {src}")
    return dst


def _decode_tps(path: Path, threads: int | None, tokens: int = 32) -> float | None:
    from .loading import load

    with load(path, threads=threads, n_ctx=256) as m:
        messages = [{"role": "user", "content": "Tell me about the history of the printing press."}]
        m.chat(messages, max_tokens=4, temperature=0.0)  # warm-up
        return m.chat(messages, max_tokens=tokens, temperature=0.0).metrics.decode_tps


class _Calibration:
    """The original model's log-probabilities on the calibration ids, computed once."""

    def __init__(self, src: Path, text: str | None, max_tokens: int, threads: int | None) -> None:
        self.src, self.threads = src, threads
        self.ref = reference_scores(src, text=text, max_tokens=max_tokens, n_ctx=max_tokens + 1, threads=threads)

    def score(self, path: Path) -> EvalResult:
        return evaluate(path, self.ref, threads=self.threads)

    def close(self) -> None:
        self.ref.log_probs.clear()


def _rank(cal: _Calibration, workdir: Path, candidates: Sequence[int], rep: Reporter | None = None) -> list[LayerCost]:
    costs = []
    layers = list(candidates)
    with (rep or reporter(False)).stage("ranking layers (each dropped alone)", total=len(layers),
                                        unit="layers") as st:
        for layer in layers:
            out = drop_layers(cal.src, workdir / f"drop-{layer}.gguf", [layer], cal.threads)
            r = cal.score(out)
            out.unlink()
            costs.append(LayerCost(layer, float(r.kld_mean or 0.0), r.ppl, float(r.top1 or 0.0)))
            log.info("without layer %d: KLD %.4f, ppl %.2f", layer, costs[-1].kld, r.ppl)
            st.advance(message=f"layer {layer}: KLD {costs[-1].kld:.4f}, PPL {r.ppl:.2f}")
    return sorted(costs, key=lambda c: c.kld)


def _calibrate(src: Path, text: str | None, max_tokens: int, threads: int | None, rep: Reporter) -> _Calibration:
    with rep.stage("scoring the unpruned model", unit="tokens") as st:
        cal = _Calibration(src, text, max_tokens, threads)
        st.update(len(cal.ref.tokens))
    return cal


def rank_layers(model: str | Path, *, text: str | None = None, max_tokens: int = 128,
                candidates: Sequence[int] | None = None, threads: int | None = None,
                progress: ProgressArg | Reporter = None) -> list[LayerCost]:
    """Every block (or `candidates`), cheapest to remove first. progress: see edgellm.progress."""
    src = gguf_file(model)
    rep = reporter(progress)
    cal = _calibrate(src, text, max_tokens, threads, rep)
    try:
        with tempfile.TemporaryDirectory(prefix="edgellm-prune-") as tmp:
            ranking = _rank(cal, Path(tmp), candidates if candidates is not None else range(block_count(src)), rep)
            rep.note("layer ranking (cheapest to drop first)\n" + format_ranking(ranking))
            return ranking
    finally:
        cal.close()


def prune(model: str | Path, output: str | Path | None, layers: int | Sequence[int] | str = "auto", *,
          max_kld: float | None = None, max_ppl_increase: float | None = None, text: str | None = None,
          max_tokens: int = 128, candidates: Sequence[int] | None = None, threads: int | None = None,
          measure_speed: bool = True, progress: ProgressArg | Reporter = None,
          source_label: str | None = None) -> PruneResult:
    """Drop `layers` blocks (a count, explicit indices, or "auto": as many as `max_kld` allows) and write
    the pruned artifact to `output` (a folder). Raises BudgetNotMetError with the measured table when the
    result misses `max_kld` / `max_ppl_increase` (or "auto" cannot drop even one layer).
    progress: see edgellm.progress (the ranking reports each layer; the measured tables are shown at the end,
    `result.format_table()` returns them). source_label: what the manifest names as the source instead of
    `model`'s path (when that is a temporary file)."""
    if layers == "auto" and max_kld is None and max_ppl_increase is None:
        raise EdgeLLMError("layers='auto' needs a quality budget", "pass max_kld (e.g. 0.05) or max_ppl_increase")
    src = gguf_file(model)
    if output is not None and Path(output).is_dir() and any(Path(output).iterdir()):
        from .errors import OutputPathError
        raise OutputPathError(f"{output} exists and is not empty", "choose a new output folder")
    rep = reporter(progress)
    cal = _calibrate(src, text, max_tokens, threads, rep)
    table: list[dict[str, Any]] = []
    try:
        base = cal.score(src)
        with tempfile.TemporaryDirectory(prefix="edgellm-prune-") as tmp:
            work = Path(tmp)
            ranking: list[LayerCost] = []
            if isinstance(layers, (list, tuple)):
                chosen = [int(i) for i in layers]
            else:
                ranking = _rank(cal, work, candidates if candidates is not None else range(block_count(src)), rep)
                chosen = [c.layer for c in ranking[: int(cast(SupportsInt, layers))]] if not isinstance(layers, str) else []

            def within(r: EvalResult) -> bool:
                ok_kld = max_kld is None or (r.kld_mean or 0.0) <= max_kld
                ok_ppl = max_ppl_increase is None or r.ppl / base.ppl - 1.0 <= max_ppl_increase
                return ok_kld and ok_ppl

            def trial(drop: list[int]) -> tuple[Path, EvalResult]:
                with rep.stage(f"measuring layers {', '.join(map(str, sorted(drop)))} dropped together") as st:
                    path = drop_layers(src, work / f"pruned-{len(table)}.gguf", drop, threads)
                    r = cal.score(path)
                    table.append({"dropped": sorted(drop), "kld": r.kld_mean, "ppl": r.ppl, "top1": r.top1,
                                  "ppl_increase": r.ppl / base.ppl - 1.0, "within_budget": within(r)})
                    st.close(f"KLD {r.kld_mean or 0:.4f}, PPL {r.ppl:.2f}")
                return path, r

            if layers == "auto":  # grow the set in rank order while the budget holds
                best: tuple[list[int], Path, EvalResult] | None = None
                for c in ranking:
                    path, r = trial((best[0] if best else []) + [c.layer])
                    if not within(r):
                        break
                    best = ((best[0] if best else []) + [c.layer], path, r)
                if best is None:
                    raise BudgetNotMetError(f"dropping even the cheapest layer misses the budget "
                                            f"(max_kld={max_kld}, max_ppl_increase={max_ppl_increase})",
                                            table=table)
                chosen, path, r = best
            else:
                path, r = trial(chosen)
                if not within(r):
                    raise BudgetNotMetError(
                        f"dropping layers {sorted(chosen)} costs KLD {r.kld_mean:.4f} / PPL {r.ppl:.2f} "
                        f"(base {base.ppl:.2f}), over the budget (max_kld={max_kld}, "
                        f"max_ppl_increase={max_ppl_increase})", table=table)
            result = PruneResult(None, tuple(sorted(chosen)), src.stat().st_size, path.stat().st_size,
                                 float(r.kld_mean or 0.0), base.ppl, r.ppl, float(r.top1 or 0.0), ranking=ranking,
                                 trials=table)
            if measure_speed:
                with rep.stage("measuring decode speed before and after"):
                    result.decode_tps_before = _decode_tps(src, threads)
                    result.decode_tps_after = _decode_tps(path, threads)
            if output is not None:
                result.output = _write_artifact(src, path, Path(output), result, table, source_label)
            rep.note("prune: measured tables\n" + result.format_table())
            return result
    finally:
        cal.close()


def _write_artifact(src: Path, pruned: Path, out_dir: Path, result: PruneResult, table: list[dict],
                    source_label: str | None = None) -> Path:
    from .converters.manifest import MANIFEST_NAME, Manifest, read_manifest, sha256_file, write_manifest

    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{src.stem}-pruned{len(result.dropped)}.gguf"
    final = out_dir / name
    shutil.move(str(pruned), final)
    if (src.parent / MANIFEST_NAME).is_file():
        m = read_manifest(src.parent)
    else:
        m = Manifest(format="gguf", file=name, quant="?", size_bytes=0, sha256="", context_length=2048)
    m.file, m.files, m.size_bytes, m.sha256 = name, [name], final.stat().st_size, sha256_file(final)
    m.extra = {**m.extra, "prune": {"dropped_layers": list(result.dropped), "source": source_label or str(src),
                                    "kld": result.kld, "ppl_before": result.ppl_before,
                                    "ppl_after": result.ppl_after, "top1": result.top1, "trials": table,
                                    "ranking": [asdict(c) for c in result.ranking]}}
    write_manifest(out_dir, m)
    return final


def trade_table(model: str | Path, counts: Sequence[int] = (1, 2, 4), *, text: str | None = None,
                max_tokens: int = 128, candidates: Sequence[int] | None = None, threads: int | None = None,
                measure_speed: bool = True) -> tuple[list[LayerCost], list[PruneResult]]:
    """Rank the blocks once, then drop the `n` cheapest for each n in `counts`: (ranking, one result per n).

    Layers are chosen by their individual cost; the combined cost is measured, not assumed additive."""
    src = gguf_file(model)
    cal = _Calibration(src, text, max_tokens, threads)
    try:
        base = cal.score(src)
        before = _decode_tps(src, threads) if measure_speed else None
        with tempfile.TemporaryDirectory(prefix="edgellm-prune-") as tmp:
            work = Path(tmp)
            ranking = _rank(cal, work, candidates if candidates is not None else range(block_count(src)))
            results = []
            for n in counts:
                drop = sorted(c.layer for c in ranking[:n])
                path = drop_layers(src, work / f"pruned-{n}.gguf", drop, threads)
                r = cal.score(path)
                res = PruneResult(None, tuple(drop), src.stat().st_size, path.stat().st_size,
                                  float(r.kld_mean or 0.0), base.ppl, r.ppl, float(r.top1 or 0.0),
                                  before, _decode_tps(path, threads) if measure_speed else None)
                results.append(res)
                path.unlink()
            return ranking, results
    finally:
        cal.close()
