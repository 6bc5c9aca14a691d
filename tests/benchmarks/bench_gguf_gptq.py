"""edgellm's GPTQ rounding in llama.cpp block layouts vs llama.cpp's own quantizer (with and without edgellm's
importance matrix): KL divergence on three unlike texts, file sizes, and (--speed) llama.cpp's decode/prefill
speed on the GPTQ file vs llama.cpp's own file of the same type.

    python tests/benchmarks/bench_gguf_gptq.py [--models smollm2,gemma3] [--types Q4_0,Q4_K_M,IQ3_XXS]
                                               [--eval-tokens 512] [--threads 2] [--json out.json]
    python tests/benchmarks/bench_gguf_gptq.py --speed [--models smollm2] [--types Q4_0] [--runs 5]

Reference: the F32 GGUF of each HF folder (SmolLM2: the rebuilt folder; Gemma 3 270M: tests/fixtures/gemma3's
unpacked folder). Every artifact is made by edgellm's converter (convert_to_gguf): `llama` = llama.cpp's
quantizer without an importance matrix, `llama+imatrix` = with edgellm's importance matrix, `gptq` = llama.cpp's
headers with GPTQ-chosen codes (rounding="gptq"; `gptq` = the recipe's types, the default; `gptq-fast` / `gptq-size` =
the same-size mixes). Texts and the KLD evaluation are bench_imatrix's. --speed compares the --speed-variant file
(default gptq-fast) with llama.cpp's own file of the type without an importance matrix (`llama`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgellm.converters.gguf import convert_to_gguf  # noqa: E402
from edgellm.errors import QuantizationError  # noqa: E402
from edgellm.evaluation import evaluate, reference_scores  # noqa: E402
from tests.benchmarks.bench_imatrix import texts  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "llama": {"imatrix": False, "rounding": "llama"},
    "llama+imatrix": {"imatrix": True, "rounding": "llama"},
    "gptq": {"imatrix": True, "rounding": "gptq"},                         # the default: the recipe's types
    "gptq-fast": {"imatrix": True, "rounding": "gptq", "mix": "fast"},
    "gptq-size": {"imatrix": True, "rounding": "gptq", "mix": "size"},
}


def model_dirs() -> dict[str, Callable[[], Path]]:
    from tests.fixtures import gemma3, smollm2

    return {"smollm2": smollm2.smollm2_hf_dir, "gemma3": gemma3.gemma3_hf}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def kld_table(model: str, hf: Path, types: list[str], variants: list[str], work: Path, eval_tokens: int,
              threads: int) -> list[dict[str, Any]]:
    ref = convert_to_gguf(hf, work / f"{model}-f32", "F32").path
    refs = {name: reference_scores(ref, text=text, max_tokens=eval_tokens, n_ctx=512, threads=threads)
            for name, text in texts().items()}
    rows = []
    for qname in types:
        for variant in variants:
            row: dict[str, Any] = {"model": model, "type": qname, "variant": variant}
            t0, c0 = time.perf_counter(), _cpu()
            try:
                res = convert_to_gguf(hf, work / f"{model}-{qname}-{variant}", qname, **VARIANTS[variant])
            except QuantizationError as exc:
                row["refused"] = str(exc).splitlines()[0][:100]
                rows.append(row)
                print(row, flush=True)
                continue
            row["convert_s"], row["convert_cpu_s"] = time.perf_counter() - t0, _cpu() - c0
            row["size_mb"] = res.path.stat().st_size / 1e6
            row["tensor_types"] = res.tensor_types
            for name, scores in refs.items():
                r = evaluate(res.path, scores, threads=threads)
                row[name] = {"kld": r.kld_mean, "top1": r.top1, "tokens": r.tokens}
            rows.append(row)
            print({k: v for k, v in row.items() if k != "tensor_types"}, flush=True)
            res.path.unlink()
    return rows


def print_kld(rows: list[dict[str, Any]]) -> None:
    names = list(texts())
    print("| model | type | rounding | size MB | " + " | ".join(f"KLD {n}" for n in names)
          + " | " + " | ".join(f"vs llama {n}" for n in names) + " |")
    print("|---|---|---|---:|" + "---:|" * (2 * len(names)))
    base = {(r["model"], r["type"]): r for r in rows if r["variant"] == "llama" and "refused" not in r}
    for r in rows:
        if "refused" in r:
            print(f"| {r['model']} | {r['type']} | {r['variant']} | refused: {r['refused']} |")
            continue
        b = base.get((r["model"], r["type"]))
        ratios = [f"{r[n]['kld'] / b[n]['kld']:.2f}x" if b else "-" for n in names]
        print(f"| {r['model']} | {r['type']} | {r['variant']} | {r['size_mb']:.1f} | "
              + " | ".join(f"{r[n]['kld']:.4f}" for n in names) + " | " + " | ".join(ratios) + " |")


def _speed_once(path: Path, threads: int, prompt: list[int], gen: int) -> tuple[float, float, float, float]:
    """(prefill tokens/s, decode tokens/s, prefill tokens per CPU second, decode tokens per CPU second) of raw
    llama-cpp-python on `path` (the CPU-time rates hold up better on a machine shared with other jobs), opened under
    this host's kernel policy (open_llama: on a CPU where llama.cpp's AMX kernels crash, both files of a
    comparison run with the extra buffer types off)."""
    from edgellm.runtimes.llama_native import open_llama

    llm = open_llama(path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512)
    try:
        llm.eval(prompt[:64])          # warm-up: buffers allocated, weights paged in (not timed)
        llm.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        llm.eval(prompt)
        t1, c1 = time.perf_counter(), time.process_time()
        tok = prompt[-1]
        for _ in range(gen):
            llm.eval([tok])
            tok = int(llm.scores[llm.n_tokens - 1].argmax())
        t2, c2 = time.perf_counter(), time.process_time()
    finally:
        llm.close()
    return len(prompt) / (t1 - t0), gen / (t2 - t1), len(prompt) / (c1 - c0), gen / (c2 - c1)


def speed(model: str, hf: Path, qname: str, work: Path, threads: int, runs: int,
          variant: str = "gptq-fast") -> dict[str, Any]:
    """Alternating runs (ABBA order) of llama.cpp's own file of the type (`llama`) and edgellm's `variant` file,
    each in a fresh llama.cpp context after a warm-up; medians and their ratios (edgellm / llama.cpp)."""
    files = {v: convert_to_gguf(hf, work / f"{model}-{qname}-{v}-speed", qname, **VARIANTS[v]).path
             for v in ("llama", variant)}
    prompt = list(range(100, 100 + 256))
    got: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in files}
    for i in range(runs):
        for v, p in (list(files.items()) if i % 2 == 0 else list(reversed(files.items()))):
            got[v].append(_speed_once(p, threads, prompt, 64))
    med = {v: tuple(statistics.median(x[i] for x in got[v]) for i in range(4)) for v in got}
    a, b = med["llama"], med[variant]
    out = {"model": model, "type": qname, "variant": variant, "threads": threads, "runs": runs,
           "size_mb": {v: p.stat().st_size / 1e6 for v, p in files.items()},
           "prefill_tps": {v: m[0] for v, m in med.items()}, "decode_tps": {v: m[1] for v, m in med.items()},
           "samples": got, "prefill_ratio": b[0] / a[0], "decode_ratio": b[1] / a[1],
           "prefill_cpu_ratio": b[2] / a[2], "decode_cpu_ratio": b[3] / a[3]}
    for p in files.values():
        p.unlink()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--types", default="Q4_0,Q4_K_M,IQ3_XXS")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--eval-tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed", action="store_true", help="speed ratio instead of the KLD table")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--speed-variant", default="gptq-fast", choices=[v for v in VARIANTS if v != "llama"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dirs = model_dirs()
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgellm-bench-gguf-gptq-") as tmp:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            hf = dirs[model]()
            if args.speed:
                for qname in types:
                    results.append(speed(model, hf, qname, Path(tmp), args.threads, args.runs, args.speed_variant))
                    print(results[-1], flush=True)
            else:
                results += kld_table(model, hf, types, args.variants.split(","), Path(tmp), args.eval_tokens,
                                     args.threads)
    if args.speed:
        print("| model | type | edgellm variant | size MB (llama / edgellm) | prefill tok/s (llama / edgellm) | "
              "ratio | decode tok/s (llama / edgellm) | ratio | prefill ratio (CPU s) | decode ratio (CPU s) |")
        print("|---|---|---|---|---|---:|---|---:|---:|---:|")
        for r in results:
            s, p, d, v = r["size_mb"], r["prefill_tps"], r["decode_tps"], r["variant"]
            print(f"| {r['model']} | {r['type']} | {v} | {s['llama']:.2f} / {s[v]:.2f} | "
                  f"{p['llama']:.0f} / {p[v]:.0f} | {r['prefill_ratio']:.3f} | "
                  f"{d['llama']:.1f} / {d[v]:.1f} | {r['decode_ratio']:.3f} | "
                  f"{r['prefill_cpu_ratio']:.3f} | {r['decode_cpu_ratio']:.3f} |")
    else:
        print_kld(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
