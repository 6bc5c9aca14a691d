"""What the safe kernel switch costs: llama.cpp's default CPU kernels vs extra buffer types off, same GGUF.

On a host with a known kernel defect (AMX) edgellm opens affected models with `use_extra_bufts=False`, which also
gives up llama.cpp's repacked layouts (Q4_0, Q4_K, IQ4_NL, Q8_0 on AVX2/AVX-512/NEON). This measures that price on
this machine: both configurations loaded once in one process, alternating repetitions, fresh prefill each time,
2 threads; medians and the safe/default ratio per quant. JSON + Markdown in bench-results/.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from ab_report import ab_row, write_ab  # noqa: E402

QUANTS, REPS, TOKENS, THREADS = ("Q4_0", "Q4_K_M", "Q8_0"), 7, 64, 2
PROMPT = ("Write a long story about a lighthouse keeper who counts the stairs every evening, the ships that "
          "pass in the night, and the granddaughter who asks him why the job matters. ") * 3


def _run(llm, ids: list[int]) -> tuple[float, float]:  # noqa: ANN001
    llm.reset()
    t0 = time.perf_counter()
    times = []
    for _ in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
        times.append(time.perf_counter())
        if len(times) >= TOKENS:
            break
    return len(ids) / (times[0] - t0), (len(times) - 1) / (times[-1] - times[0])


def main() -> int:
    from edgellm.default_model import default_artifact
    from edgellm.runtimes.llama_native import KernelPolicy, open_llama

    configs = {"default": KernelPolicy(), "safe": KernelPolicy(use_extra_bufts=False, reasons=("benchmark",))}
    rows = []
    for quant in QUANTS:
        path = next(default_artifact(quant).glob("*.gguf"))
        llms = {name: open_llama(path, policy=p, n_ctx=1024, n_threads=THREADS, n_threads_batch=THREADS)
                for name, p in configs.items()}
        ids = llms["default"].tokenize(PROMPT.encode())
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in llms}
        for name in llms:
            _run(llms[name], ids)  # warm-up
        for rep in range(REPS):
            for name in (list(llms) if rep % 2 == 0 else list(llms)[::-1]):
                samples[name].append(_run(llms[name], ids))
        med = {(n, k): statistics.median(x[i] for x in v) for n, v in samples.items()
               for i, k in enumerate(("prefill", "decode"))}
        rows.append(ab_row(quant, "default", "safe", med))
        for llm in llms.values():
            llm.close()
    print(write_ab("kernel_switch", "default", "safe", rows, {"reps": REPS, "tokens": TOKENS, "threads": THREADS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
