"""Benchmark: edgellm ONNX int4 vs onnxruntime-genai running its own builder's int4 model of the same HF
folder, vs llama.cpp Q4_0 of the same SmolLM2 weights. Prefill and decode tokens/s (median of reps), size,
KL vs fp32 on two texts, conversion time and peak RSS. Prints JSON and Markdown tables. Not part of the test run.

    python tests/benchmarks/bench_onnx.py [--reps 5] [--threads 2] [--builder-python PY]

onnxruntime-genai's builder needs torch + transformers, which edgellm never installs; give the python of a
separate venv that has them (`--builder-python`, or $EDGELLM_GENAI_BUILDER_PYTHON), e.g.
    python3 -m venv /tmp/genai-venv && /tmp/genai-venv/bin/pip install torch transformers onnxruntime-genai \
        onnx onnxruntime onnx_ir onnxscript
Without it the builder rows are marked skipped.

edgellm and genai run in the same process, one rep each in turn, so a busy machine slows both alike. Both are
also run at each other's thread count: genai defaults to hardware threads / 2 (1 on a 2-core box), and on a
shared 2-core machine a 2-thread onnxruntime pool can be *slower* than 1 thread (a preempted worker stalls
every parallel op), so only same-thread-count ratios say anything about the runtime itself.
"""
from __future__ import annotations

import argparse
import json
import os
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
from tests.fixtures.texts import PROSE, VARIED  # noqa: E402

PROMPT = ("Write a short note to a neighbour explaining that the garden hose will be borrowed for the weekend, "
          "that it will be returned on Monday morning, and thanking them for the tomatoes they left on the step. ") * 3

CONVERT = """
import resource, sys, time, json
from edgellm.converters.onnx import convert_to_onnx
t = time.perf_counter(); convert_to_onnx(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


BUILD_GENAI = """
import json, resource, runpy, sys, time
sys.argv = ["builder"] + sys.argv[1:]
t = time.perf_counter()
runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__")
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def convert(hf: Path, out: Path, quant: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CONVERT, str(hf), str(out), quant], check=True, capture_output=True,
                       text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def build_with_genai(python: str, hf: Path, out: Path) -> dict:
    """onnxruntime-genai's own builder, int4 for CPU, in its venv; wall time and the child's peak RSS."""
    r = subprocess.run([python, "-c", BUILD_GENAI, "-m", str(hf), "-i", str(hf), "-o", str(out), "-p", "int4",
                        "-e", "cpu"], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"genai builder failed: {r.stderr[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def artifact_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("model.onnx*")) / 2**20


def genai_default_threads() -> int:
    """onnxruntime-genai's intra-op default when genai_config.json sets none: hardware threads / 2 (1..16)."""
    return min(16, max(1, (os.cpu_count() or 2) // 2))


class EdgellmEngine:
    def __init__(self, path: Path, threads: int, n_decode: int) -> None:
        import edgellm

        extra = {"cache_prompt": False} if str(path).endswith(".gguf") else {}   # every rep prefills afresh
        self.model = edgellm.load(path, threads=threads, n_ctx=1024, **extra)
        self.n_decode, self.threads = n_decode, threads

    def rep(self) -> tuple[float, float, int]:
        r = self.model.generate(PROMPT, max_tokens=self.n_decode, temperature=0)
        return r.metrics.prefill_tps, r.metrics.decode_tps, r.metrics.prompt_tokens

    def close(self) -> None:
        self.model.close()


class GenaiEngine:
    def __init__(self, folder: Path, threads: int | None, n_decode: int) -> None:
        import onnxruntime_genai as og

        self.og = og
        cfg = og.Config(str(folder))
        if threads is not None:
            cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(cfg)
        self.ids = og.Tokenizer(self.model).encode(PROMPT)
        self.n_decode = n_decode
        self.threads = threads if threads is not None else f"genai default ({genai_default_threads()})"

    def rep(self) -> tuple[float, float, int]:
        og, ids, n = self.og, self.ids, self.n_decode
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + n + 1, do_sample=False)
        gen = og.Generator(self.model, params)
        t0 = time.perf_counter()
        gen.append_tokens(ids)
        gen.generate_next_token()
        t1 = time.perf_counter()
        for _ in range(n - 1):
            gen.generate_next_token()
        t2 = time.perf_counter()
        return len(ids) / (t1 - t0), (n - 1) / (t2 - t1), len(ids)

    def close(self) -> None:
        self.model = None


def bench_alternating(engines: dict[str, object], reps: int) -> dict[str, dict]:
    """One warm-up each, then `reps` rounds of one rep per engine in turn (the machine's load hits all alike);
    medians per engine, with every rep kept."""
    for e in engines.values():
        e.rep()
    runs: dict[str, list] = {name: [] for name in engines}
    for _ in range(reps):
        for name, e in engines.items():
            runs[name].append(e.rep())
    out = {}
    for name, rs in runs.items():
        out[name] = {"prefill_tps": statistics.median(r[0] for r in rs),
                     "decode_tps": statistics.median(r[1] for r in rs), "prompt_tokens": rs[0][2],
                     "threads": engines[name].threads, "decode_reps": [round(r[1], 1) for r in rs]}
    return out


def kl_vs(ref_logits: np.ndarray, path: Path, ids: list[int]) -> float:
    import edgellm

    with edgellm.load(path, n_ctx=1024) as m:
        return float(kl_divergence(ref_logits, m.logits(ids)).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--builder-python", default=None, help="python of a venv with onnxruntime-genai's builder")
    args = ap.parse_args()
    import edgellm

    hf = smollm2.smollm2_hf_dir()
    work = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    results: dict = {"model": "SmolLM2-135M-Instruct (rebuilt)", "threads": args.threads, "reps": args.reps}
    conv = {q: convert(hf, work / q, q) for q in ("fp32", "int4")}
    builder = args.builder_python or os.environ.get("EDGELLM_GENAI_BUILDER_PYTHON")
    arts = {"edgellm-int4": work / "int4"}
    if builder:
        conv["genai-builder-int4"] = build_with_genai(builder, hf, work / "genai-int4")
        arts["genai-builder-int4"] = work / "genai-int4"
    results["conversion"] = conv
    from edgellm.evaluation import default_text

    with edgellm.load(work / "fp32", n_ctx=1024) as m:
        texts = {"docs": m.tokenize(default_text())[:512],
                 "prose": m.tokenize(PROSE + "\n\n" + "\n".join(VARIED))[:512]}
        refs = {k: m.logits(v) for k, v in texts.items()}
    quality = {}
    for name, folder in arts.items():
        with edgellm.load(folder / "model.onnx", n_ctx=1024) as m:
            quality[name] = {"size_mib": artifact_mib(folder), **{
                f"kl_{k}": float(kl_divergence(refs[k], m.logits(ids)).mean()) for k, ids in texts.items()}}
    results["quality"] = quality
    rows: dict[str, dict] = {}
    gd = genai_default_threads()
    engines: dict[str, object] = {}
    for t in sorted({args.threads, gd}):
        engines[f"edgellm on edgellm-int4 (threads={t})"] = EdgellmEngine(work / "int4" / "model.onnx", t, args.decode)
        try:
            for art, folder in arts.items():
                engines[f"genai on {art} (threads={t})"] = GenaiEngine(folder, t, args.decode)
        except ImportError as exc:
            rows["genai"] = {"skipped": f"onnxruntime-genai not importable ({exc})"}
        if "genai-builder-int4" in arts:
            engines[f"edgellm on genai-builder-int4 (threads={t})"] = EdgellmEngine(
                work / "genai-int4" / "model.onnx", t, args.decode)
    for name, r in bench_alternating(engines, args.reps).items():
        rows[name] = r
    for e in engines.values():
        e.close()
    if not builder:
        rows["genai-builder-int4"] = {"skipped": "no --builder-python (the builder needs torch + transformers)"}
    q40 = smollm2.smollm2_gguf("Q4_0")
    llama = EdgellmEngine(q40, args.threads, args.decode)
    rows["llama.cpp-Q4_0"] = bench_alternating({"llama.cpp-Q4_0": llama}, args.reps)["llama.cpp-Q4_0"]
    llama.close()
    with edgellm.load(q40, n_ctx=1024) as m:
        quality["llama.cpp-Q4_0"] = {"size_mib": q40.stat().st_size / 2**20, **{
            f"kl_{k}": float(kl_divergence(refs[k], m.logits(ids)).mean()) for k, ids in texts.items()}}
    results["rows"] = rows
    print(json.dumps(results, indent=2))
    print("\n| artifact | size MiB | KL vs fp32 (docs, 512 tok) | KL vs fp32 (prose, 512 tok) |")
    print("|---|---:|---:|---:|")
    for name, q in quality.items():
        print(f"| {name} | {q['size_mib']:.1f} | {q['kl_docs']:.4f} | {q['kl_prose']:.4f} |")
    print("\n| runtime on artifact | threads | prefill tok/s | decode tok/s |")
    print("|---|---|---:|---:|")
    for name, r in rows.items():
        if "skipped" in r:
            print(f"| {name} | skipped: {r['skipped']} | | |")
        else:
            print(f"| {name} | {r['threads']} | {r['prefill_tps']:.1f} | {r['decode_tps']:.1f} |")
    print("\nratios at the same thread count (same run, alternating reps):")
    for t in sorted({args.threads, gd}):
        ours = rows.get(f"edgellm on edgellm-int4 (threads={t})")
        for other in (f"genai on genai-builder-int4 (threads={t})", f"genai on edgellm-int4 (threads={t})"):
            g = rows.get(other)
            if ours and g:
                print(f"  edgellm on edgellm-int4 / {other}: prefill {ours['prefill_tps'] / g['prefill_tps']:.2f}x, "
                      f"decode {ours['decode_tps'] / g['decode_tps']:.2f}x")
    print("\nconversion: " + ", ".join(f"{q}: {c['seconds']:.1f}s, peak RSS {c['peak_rss_mib']:.0f} MiB"
                                       for q, c in conv.items()))


if __name__ == "__main__":
    main()
