"""Native vs portable llama.cpp builds: the same SmolLM2 GGUFs through edgellm, alternating repetitions.

The native build is the package's own (compiled with -march=native by `make install`); the portable one is a
wheel built by `make portable` (GGML_NATIVE=OFF, GGML_BACKEND_DL, GGML_CPU_ALL_VARIANTS), whose lib folder is
given with --portable-lib (llama-cpp-python loads it through LLAMA_CPP_LIB_PATH). One long-lived child per
build keeps every model loaded; the parent alternates between them, rep by rep, and reports medians and the
portable/native ratio of prefill and decode tokens/s per quant. JSON + Markdown in bench-results/.

    python tests/benchmarks/bench_portable.py --portable-lib /path/to/portable/llama_cpp/lib [--reps 7]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from ab_report import ab_row, write_ab  # noqa: E402

QUANTS = ("Q4_0", "Q4_K_M", "Q8_0", "F16")
CHILD = r"""
import json, sys
import edgellm
from edgellm.runtimes.llama_native import build_info
PROMPT = ("Write a long story about a lighthouse keeper who counts the stairs every evening, the ships that "
          "pass in the night, and the granddaughter who asks him why the job matters. ") * 3
models = {}
print(json.dumps({"features": build_info().features}), flush=True)
for line in sys.stdin:
    quant, path, n = line.split()
    if quant not in models:
        models[quant] = edgellm.load(path, threads=2, n_ctx=1024, cache_prompt=False)
        models[quant].generate(PROMPT, max_tokens=8, temperature=0.0)  # warm-up
    m = models[quant].generate(PROMPT, max_tokens=int(n), temperature=0.0).metrics
    print(json.dumps({"prefill": m.prefill_tps, "decode": m.decode_tps, "backend": m.backend}), flush=True)
"""


def _child(lib: str | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if lib:
        env["LLAMA_CPP_LIB_PATH"] = lib
    return subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--portable-lib", default=os.environ.get("EDGELLM_PORTABLE_LIB"),
                    help="lib folder of a llama-cpp-python built by make portable (or $EDGELLM_PORTABLE_LIB)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    if not args.portable_lib:
        print("bench_portable: not run (no portable build given: --portable-lib or EDGELLM_PORTABLE_LIB)")
        return 0
    sys.path.insert(0, str(ROOT))
    from edgellm.default_model import default_artifact

    files = {q: next(default_artifact(q).glob("*.gguf")) for q in QUANTS}
    builds = {"native": _child(None), "portable": _child(args.portable_lib)}
    features = {name: json.loads(proc.stdout.readline())["features"] for name, proc in builds.items()}
    samples: dict[tuple[str, str], list[dict]] = {}
    started = time.time()
    for rep in range(args.reps):
        order = list(builds) if rep % 2 == 0 else list(builds)[::-1]
        for quant in QUANTS:
            for name in order:
                proc = builds[name]
                proc.stdin.write(f"{quant} {files[quant]} {args.tokens}\n")
                proc.stdin.flush()
                samples.setdefault((name, quant), []).append(json.loads(proc.stdout.readline()))
    for proc in builds.values():
        proc.stdin.close()
        proc.wait()
    rows = []
    for quant in QUANTS:
        med = {(n, k): statistics.median(s[k] for s in samples[(n, quant)]) for n in builds for k in ("prefill", "decode")}
        rows.append(ab_row(quant, "native", "portable", med))
    print(write_ab("portable", "native", "portable", rows, {
        "reps": args.reps, "tokens": args.tokens, "threads": 2, "seconds": round(time.time() - started, 1),
        "features": features}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
