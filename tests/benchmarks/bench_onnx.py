"""Benchmark: edgellm ONNX int4 vs onnxruntime-genai (same artifact; its own builder if installable) vs
llama.cpp Q4_0 of the same SmolLM2 weights. Prefill and decode tokens/s (median of reps), KL vs fp32,
conversion time and peak RSS. Prints JSON and a Markdown table of ratios. Not part of the test run.

    python tests/benchmarks/bench_onnx.py [--reps 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fixtures import smollm2  # noqa: E402
from tests.fixtures.reference_llama import kl_divergence  # noqa: E402

PROMPT = ("Write a short note to a neighbour explaining that the garden hose will be borrowed for the weekend, "
          "that it will be returned on Monday morning, and thanking them for the tomatoes they left on the step. ") * 3
KL_TEXT = ("Maps of the old harbour show a narrow channel between two sandbanks. Sailors learned the safe line by "
           "lining up the church tower with a white stone on the hill, and every apprentice had to draw it from "
           "memory before he was allowed to steer. ") * 4

CONVERT = """
import resource, sys, time, json
from edgellm.converters.onnx import convert_to_onnx
t = time.perf_counter(); convert_to_onnx(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def convert(hf: Path, out: Path, quant: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CONVERT, str(hf), str(out), quant], check=True, capture_output=True,
                       text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench_edgellm(path: Path, threads: int, reps: int, n_decode: int) -> dict:
    import edgellm

    pre, dec = [], []
    with edgellm.load(path, threads=threads, n_ctx=1024) as m:
        for _ in range(reps):
            r = m.generate(PROMPT, max_tokens=n_decode, temperature=0)
            pre.append(r.metrics.prefill_tps)
            dec.append(r.metrics.decode_tps)
        prompt_tokens = r.metrics.prompt_tokens
    return {"prefill_tps": statistics.median(pre), "decode_tps": statistics.median(dec), "prompt_tokens": prompt_tokens}


def bench_genai(folder: Path, threads: int, reps: int, n_decode: int) -> dict:
    import onnxruntime_genai as og

    cfg = og.Config(str(folder))
    model = og.Model(cfg)
    tok = og.Tokenizer(model)
    ids = tok.encode(PROMPT)
    pre, dec = [], []
    for _ in range(reps):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + n_decode + 1, do_sample=False)
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(ids)
        gen.generate_next_token()
        t1 = time.perf_counter()
        for _ in range(n_decode - 1):
            gen.generate_next_token()
        t2 = time.perf_counter()
        pre.append(len(ids) / (t1 - t0))
        dec.append((n_decode - 1) / (t2 - t1))
    return {"prefill_tps": statistics.median(pre), "decode_tps": statistics.median(dec), "prompt_tokens": len(ids),
            "threads": "genai default (session options from genai_config.json)"}


def kl_vs(ref_logits: np.ndarray, path: Path, ids: list[int]) -> float:
    import edgellm

    with edgellm.load(path, n_ctx=1024) as m:
        return float(kl_divergence(ref_logits, m.logits(ids)).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", type=int, default=64)
    args = ap.parse_args()
    import edgellm

    hf = smollm2.smollm2_hf_dir()
    work = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    results: dict = {"model": "SmolLM2-135M-Instruct (rebuilt)", "threads": args.threads, "reps": args.reps}
    conv = {q: convert(hf, work / q, q) for q in ("fp32", "int4")}
    results["conversion"] = conv
    with edgellm.load(work / "fp32", n_ctx=1024) as m:
        ids = m.tokenize(KL_TEXT)[:200]
        ref = m.logits(ids)
    rows: dict[str, dict] = {}
    rows["edgellm-onnx-int4"] = {**bench_edgellm(work / "int4", args.threads, args.reps, args.decode),
                                 "kl_vs_fp32": kl_vs(ref, work / "int4", ids)}
    try:
        rows["genai-on-our-artifact"] = {**bench_genai(work / "int4", args.threads, args.reps, args.decode),
                                         "kl_vs_fp32": rows["edgellm-onnx-int4"]["kl_vs_fp32"],
                                         "note": "same model file as edgellm-onnx-int4, so the same KL"}
    except ImportError as exc:
        rows["genai-on-our-artifact"] = {"skipped": f"onnxruntime-genai not importable ({exc})"}
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from onnxruntime_genai.models import builder  # noqa: F401
        rows["genai-builder-int4"] = {"skipped": "builder importable but not wired in this run"}
    except ImportError as exc:
        rows["genai-builder-int4"] = {"skipped": f"onnxruntime-genai's builder needs torch + transformers, "
                                                 f"not installed here ({exc})"}
    q40 = smollm2.smollm2_gguf("Q4_0")
    rows["llama.cpp-Q4_0"] = {**bench_edgellm(q40, args.threads, args.reps, args.decode)}
    with edgellm.load(q40, n_ctx=1024) as m:
        rows["llama.cpp-Q4_0"]["kl_vs_fp32"] = float(kl_divergence(ref, m.logits(ids)).mean())
    results["rows"] = rows
    print(json.dumps(results, indent=2))
    base = rows["edgellm-onnx-int4"]
    print("\n| runtime | prefill tok/s | decode tok/s | KL vs fp32 | decode ratio (edgellm / this) |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        if "skipped" in r:
            print(f"| {name} | skipped: {r['skipped']} | | | |")
            continue
        print(f"| {name} | {r['prefill_tps']:.1f} | {r['decode_tps']:.1f} | {r['kl_vs_fp32']:.4f} | "
              f"{base['decode_tps'] / r['decode_tps']:.2f} |")
    print(f"\nconversion: " + ", ".join(f"{q}: {c['seconds']:.1f}s, peak RSS {c['peak_rss_mib']:.0f} MiB"
                                       for q, c in conv.items()))


if __name__ == "__main__":
    main()
