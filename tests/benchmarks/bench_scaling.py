"""Benchmark: conversion wall time and peak RSS at real sizes, on random-weight Llama-shaped checkpoints
(tests/fixtures/big_random.py: 135M, 1B, 3B; bf16 shards, torch-free, fixed seed, cached in --cache).

Each conversion runs alone in a child process; its peak RSS is the child's own ru_maxrss (os.wait4), so
neither this process nor another run counts. Prints JSON and a Markdown table with, per run, the bound the
issue asks for (3 x the largest tensor in bf16 + 1 GB) and a linear 7B projection (time by parameters, memory
by the largest layer and tensor). Not part of the test run.

    nice -n 10 python tests/benchmarks/bench_scaling.py --shapes 1b --runs onnx:int4-rtn onnx:fp16 gguf:Q8_0
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fixtures.big_random import SHAPES, write_big_llama  # noqa: E402

ALL_RUNS = ("onnx:fp32", "onnx:fp16", "onnx:int8", "onnx:int4-rtn", "onnx:int4-mse", "onnx:int4",
            "gguf:F16", "gguf:Q8_0", "gguf:Q4_K_M", "gguf:Q4_K_M+gptq", "gguf:Q4_0+gptq")
GB = 1e9

CHILD = """
import sys, edgellm
fmt, quant, src, out, threads, budget = sys.argv[1:7]
opts = {"threads": int(threads)} if threads != "0" else {}
if budget != "0" and fmt == "onnx":
    opts["max_memory"] = budget
from edgellm.converters.onnx import convert_to_onnx
from edgellm.converters.gguf import convert_to_gguf
if fmt == "onnx":
    convert_to_onnx(src, out, quant, **opts)
else:   # "+gptq": the default recipe of a real checkpoint (importance matrix + GPTQ rounding, mix "fast")
    convert_to_gguf(src, out, quant.removesuffix("+gptq"), imatrix=quant.endswith("+gptq"), **opts)
"""


def measure(fmt: str, quant: str, src: Path, threads: int, budget: str,
            keep: Path | None = None) -> dict[str, float | int | str]:
    """One conversion in a child process: wall and CPU seconds, peak RSS bytes, exit status. keep: move the artifact
    there (for bench_scaling_logits.py) instead of deleting it."""
    out = Path(tempfile.mkdtemp(prefix="bench-scaling-", dir=src.parent)) / "out"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, fmt, quant, str(src), str(out), str(threads), budget],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")[-400:] if proc.stderr else ""
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.exists() else 0
    rc = os.waitstatus_to_exitcode(status)
    if keep is not None and rc == 0:
        dest = keep / f"{fmt}-{quant}"
        shutil.rmtree(dest, ignore_errors=True)
        keep.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), str(dest))
    shutil.rmtree(out.parent, ignore_errors=True)
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss": usage.ru_maxrss * 1024, "rc": rc, "out_bytes": size,
            **({"error": err} if rc else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["135m", "1b"], choices=[s for s in SHAPES if s != "7b"])
    ap.add_argument("--runs", nargs="+", default=list(ALL_RUNS), help=f"fmt:quant, from {', '.join(ALL_RUNS)}")
    ap.add_argument("--cache", default=os.environ.get("EDGELLM_BIG_CACHE", str(Path(tempfile.gettempdir()) / "edgellm-big")))
    ap.add_argument("--threads", type=int, default=0, help="0: the converter's default")
    ap.add_argument("--max-memory", default="0", help="budget passed to ONNX runs (0: none)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep", help="keep each artifact in KEEP/<shape>/<fmt>-<quant> (bench_scaling_logits.py)")
    args = ap.parse_args()
    rows = []
    big = SHAPES["7b"]
    for name in args.shapes:
        shape = SHAPES[name]
        src = write_big_llama(Path(args.cache) / name, shape)
        bound = 3 * 2 * shape.largest_tensor + GB
        for run in args.runs:
            fmt, quant = run.split(":", 1)
            r = measure(fmt, quant, src, args.threads, args.max_memory, Path(args.keep) / name if args.keep else None)
            r.update(shape=name, run=run, params=shape.params, bound=int(bound),
                     proj_7b_s=round(float(r["wall_s"]) * big.params / shape.params, 0))
            rows.append(r)
            print(json.dumps(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\n| shape | conversion | wall s | peak RSS GB | bound GB (3×largest bf16 + 1 GB) | 7B time projection s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ok = "ok" if r["rc"] == 0 else f"rc={r['rc']}"
        print(f"| {r['shape']} | {r['run']} ({ok}) | {r['wall_s']} | {int(r['peak_rss']) / GB:.2f} | "
              f"{int(r['bound']) / GB:.2f} | {r['proj_7b_s']} |")


if __name__ == "__main__":
    main()
