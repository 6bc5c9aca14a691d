"""Benchmark: the plan's memory estimate and decode prediction against a real run, at real sizes.

For each artifact: `edgellm.plan(artifact, device="cpu", n_ctx=N)` (the worst case a plan budgets for) and the
estimate of the measured workload itself (same estimator, the run's prompt length); then a child process loads
the artifact with edgellm.load (n_ctx N, the plan's threads), generates `--tokens` tokens greedily after a short
prompt (and, with --fill, after a prompt that fills the context), under `/usr/bin/time -v`: its maximum RSS is
the real peak (load included), decode tokens/s comes from the run's metrics. Prints JSON and a Markdown table
(estimate error = estimate / measured - 1; the bars are +-15 % memory, +-30 % decode). Not part of the test run.

    python -m tests.fixtures.big_random 1b /tmp/big/1b
    edgellm convert /tmp/big/1b /tmp/big/q4km --format gguf --quant Q4_K_M --imatrix off
    edgellm convert /tmp/big/1b /tmp/big/int4 --format onnx --quant int4-rtn
    nice -n 5 python tests/benchmarks/bench_plan_accuracy.py /tmp/big/q4km /tmp/big/int4 --n-ctx 2048
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MiB = 1 << 20

CHILD = r"""
import json, sys
import edgellm
path, n_ctx, threads, n_prompt, n_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
model = edgellm.load(path, device="cpu", n_ctx=n_ctx, threads=threads)
ids = model.tokenize("The quick brown fox jumps over the lazy dog. " * (n_prompt // 4 + 8))[:n_prompt]
m = model.generate(ids, max_tokens=n_tokens, temperature=0.0).metrics
from edgellm.metrics import process_peak_rss
print(json.dumps({"prompt_tokens": m.prompt_tokens, "generated": m.generated_tokens, "decode_tps": m.decode_tps,
                  "metrics_peak": m.peak_rss_bytes, "process_peak": process_peak_rss(), "cpu_s": m.cpu_s}))
"""


def run_child(artifact: Path, n_ctx: int, threads: int, n_prompt: int, n_tokens: int) -> dict[str, Any]:
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", CHILD, str(artifact), str(n_ctx),
                           str(threads), str(n_prompt), str(n_tokens)], capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-800:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    user = re.search(r"User time \(seconds\): ([\d.]+)", proc.stderr)
    sys_ = re.search(r"System time \(seconds\): ([\d.]+)", proc.stderr)
    out["time_v_peak"] = int(peak.group(1)) * 1024 if peak else None
    out["process_cpu_s"] = float(user.group(1)) + float(sys_.group(1)) if user and sys_ else None
    return out


def workload_estimate(artifact: Path, n_ctx: int, prompt: int, tokens: int) -> int:
    """The estimator on the measured workload (prompt length, tokens), the kernel path this host takes."""
    import platform

    from edgellm.devices.memory import estimate_llama_cpp, estimate_onnxruntime
    from edgellm.planning import _gguf_file, read_model_facts

    facts = read_model_facts(artifact)
    gguf = _gguf_file(artifact)
    if gguf is not None:
        from edgellm.runtimes.llama_native import kernel_policy

        extra = kernel_policy(gguf).use_extra_bufts
        return estimate_llama_cpp(facts, n_ctx, prompt_tokens=prompt, arch=platform.machine(),
                                  extra_bufts=extra).total_bytes
    weights = facts.file_bytes or 0
    return estimate_onnxruntime(facts, n_ctx, weights_bytes=weights, prompt_tokens=prompt,
                                max_tokens=tokens).total_bytes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=16, help="short prompt length (tokens)")
    ap.add_argument("--fill", action="store_true", help="also run a prompt that fills the context")
    ap.add_argument("--json", type=Path, help="write the rows here too")
    args = ap.parse_args(argv)
    import edgellm

    rows = []
    for art in args.artifacts:
        p = edgellm.plan(art, device="cpu", n_ctx=args.n_ctx)
        prompts = [args.prompt] + ([args.n_ctx - args.tokens - 1] if args.fill else [])
        for n_prompt in prompts:
            got = run_child(art, args.n_ctx, p.threads, n_prompt, args.tokens)
            peak = got["time_v_peak"]
            est = workload_estimate(art, args.n_ctx, got["prompt_tokens"], args.tokens)
            rows.append({"artifact": art.name, "variant": f"{p.format} {p.quant}", "n_ctx": args.n_ctx,
                         "threads": p.threads, "prompt": got["prompt_tokens"], "generated": got["generated"],
                         "plan_bytes": p.memory.total_bytes, "workload_estimate_bytes": est, "peak_bytes": peak,
                         "metrics_peak_bytes": got["process_peak"], "plan_error": p.memory.total_bytes / peak - 1,
                         "workload_error": est / peak - 1, "predicted_tps": p.predicted_decode_tps,
                         "decode_tps": got["decode_tps"], "tps_error": p.predicted_decode_tps / got["decode_tps"] - 1,
                         "cpu_s": got["process_cpu_s"], "plan_terms": p.memory.describe()})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("\n| artifact | prompt + generated | plan (worst case) | estimate of this run | measured peak RSS | "
          "plan error | run-estimate error | predicted decode | measured decode | decode error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['prompt']} + {r['generated']} | {r['plan_bytes'] / MiB:.0f} MiB | "
              f"{r['workload_estimate_bytes'] / MiB:.0f} MiB | {r['peak_bytes'] / MiB:.0f} MiB | "
              f"{r['plan_error']:+.1%} | {r['workload_error']:+.1%} | {r['predicted_tps']:.1f} tok/s | "
              f"{r['decode_tps']:.1f} tok/s | {r['tps_error']:+.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
