"""edgellm's llama.cpp runtime vs raw llama-cpp-python on the same GGUF and thread count, in one run.

Reports the median decode and prefill tokens/s of each over several alternating repetitions and their
ratio (target: edgellm / raw >= 0.97), plus conversion time and peak RSS for SmolLM2 -> F16 and Q4_K_M
(each conversion in a fresh process that reports its own peak RSS). JSON + Markdown in bench-results/.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PROMPT = ("Write a long story about a lighthouse keeper who counts the stairs every evening, the ships that "
          "pass in the night, and the granddaughter who asks him why the job matters.")
N_TOKENS, REPS, THREADS, N_CTX = 128, 9, 2, 1024


def _raw_run(llm, prompt_ids: list[int]) -> tuple[float, float, int]:  # noqa: ANN001
    eos = llm.token_eos()
    llm.reset()  # fresh prefill every repetition, as edgellm's cache_prompt=False
    t0 = time.perf_counter()
    times = []
    for tok in llm.generate(prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
        times.append(time.perf_counter())
        if tok == eos or len(times) >= N_TOKENS:
            break
    return len(prompt_ids) / (times[0] - t0), (len(times) - 1) / (times[-1] - times[0]), len(times)


def _our_run(model, prompt_ids: list[int]) -> tuple[float, float, int]:  # noqa: ANN001
    m = model.generate(prompt_ids, max_tokens=N_TOKENS, temperature=0.0).metrics
    return float(m.prefill_tps or 0), float(m.decode_tps or 0), m.generated_tokens


def decode_ratio(path: Path) -> dict[str, float]:
    """Both sides loaded once (same file, threads, context), one warm-up each, then alternating repetitions."""
    import llama_cpp

    import edgellm

    raw_llm = llama_cpp.Llama(model_path=str(path), n_ctx=N_CTX, n_threads=THREADS, n_threads_batch=THREADS,
                              verbose=False)
    with edgellm.load(path, n_ctx=N_CTX, threads=THREADS, cache_prompt=False) as model:
        ids = model.chat_prompt([{"role": "user", "content": PROMPT}])
        _raw_run(raw_llm, ids), _our_run(model, ids)  # warm-up: page in weights, start thread pools
        raw, mine = [], []
        for rep in range(REPS):  # alternate the order so drift hits both sides alike
            if rep % 2 == 0:
                raw.append(_raw_run(raw_llm, ids))
                mine.append(_our_run(model, ids))
            else:
                mine.append(_our_run(model, ids))
                raw.append(_raw_run(raw_llm, ids))
    raw_llm.close()
    med: dict[str, float] = {}
    for side, runs in (("raw", raw), ("edgellm", mine)):
        med[f"{side}_prefill_tps"] = statistics.median(r[0] for r in runs)
        med[f"{side}_decode_tps"] = statistics.median(r[1] for r in runs)
    med["decode_ratio"] = med["edgellm_decode_tps"] / med["raw_decode_tps"]
    med["prefill_ratio"] = med["edgellm_prefill_tps"] / med["raw_prefill_tps"]
    med["tokens"] = mine[0][2]
    assert all(r[2] == mine[0][2] for r in raw + mine), "both sides must generate the same number of tokens"
    return med


CONVERT_SNIPPET = """
import json, resource, sys, time
from edgellm.converters.gguf import convert_to_gguf
t = time.perf_counter()
r = convert_to_gguf(sys.argv[1], sys.argv[2], sys.argv[3])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_bytes": peak, "size": r.path.stat().st_size}))
"""


def conversion(hf: Path, quant: str, out: Path) -> dict[str, float]:
    res = subprocess.run([sys.executable, "-c", CONVERT_SNIPPET, str(hf), str(out / quant), quant],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    import shutil
    import tempfile

    from edgellm.converters.hf import read_hf_model
    from edgellm.default_model import default_artifact, default_hf_dir

    import os

    results: dict[str, object] = {"threads": THREADS, "tokens": N_TOKENS, "reps": REPS,
                                  "load_average_before": os.getloadavg()[0]}
    hf = default_hf_dir()
    with read_hf_model(hf) as m:
        largest = max(i.n_elements for i in m.tensor_infos().values()) * 4
    results["largest_tensor_f32_bytes"] = largest
    for quant in ("Q4_K_M", "Q8_0"):
        gguf = next(default_artifact(quant).glob("*.gguf"))
        results[f"runtime_{quant}"] = decode_ratio(gguf)
    tmp = Path(tempfile.mkdtemp(prefix="edgellm-bench-"))
    try:
        for quant in ("F16", "Q4_K_M"):
            results[f"convert_{quant}"] = conversion(hf, quant, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    results["load_average_after"] = os.getloadavg()[0]
    busy = max(float(results["load_average_before"]), float(results["load_average_after"]))  # type: ignore[arg-type]  # results is JSON read back; these keys hold numbers
    if busy > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: load average {busy:.1f} on {os.cpu_count()} cores: other work competes for the cores; "
              "ratios are still side by side, absolute numbers are not representative")
    lines = ["| artifact | raw llama-cpp-python decode tok/s | edgellm decode tok/s | ratio | prefill ratio |",
             "|---|---|---|---|---|"]
    for quant in ("Q4_K_M", "Q8_0"):
        r = results[f"runtime_{quant}"]
        assert isinstance(r, dict)
        lines.append(f"| SmolLM2 {quant} | {r['raw_decode_tps']:.1f} | {r['edgellm_decode_tps']:.1f} | "
                     f"{r['decode_ratio']:.3f} | {r['prefill_ratio']:.3f} |")
    lines += ["", "| conversion | seconds | peak RSS MiB | output MiB |", "|---|---|---|---|"]
    for quant in ("F16", "Q4_K_M"):
        c = results[f"convert_{quant}"]
        assert isinstance(c, dict)
        lines.append(f"| HF -> {quant} | {c['seconds']:.1f} | {c['peak_rss_bytes'] / 2**20:.0f} | "
                     f"{c['size'] / 2**20:.0f} |")
    table = "\n".join(lines)
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "llama.json").write_text(json.dumps(results, indent=2))
    (out / "llama.md").write_text(table + "\n")
    print(json.dumps(results, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
