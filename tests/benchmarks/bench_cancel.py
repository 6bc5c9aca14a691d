"""Cancel latency on SmolLM2: time from `CancelToken.cancel()` (another thread) to the stream's last chunk.

Run: python tests/benchmarks/bench_cancel.py [--gguf PATH] [--onnx PATH] [--reps N] [--json OUT]
(defaults: the embedded SmolLM2 as GGUF Q4_K_M and ONNX int4, built and cached on first use).

Two phases per backend:
- decode: a short prompt, cancelled at a random point of a decode step after the 16th token;
- prefill: a 2,000-token prompt, cancelled at a random point between 20% and 80% of its measured prefill time.
Printed next to each latency: what one unit of work costs there (a decode step; llama.cpp's prefill micro-batch of
512 tokens, onnxruntime's prefill chunk of 256 tokens), which is the bound the API promises. Medians of --reps.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

PROMPT_TOKENS = 2000
UNIT = {"llama.cpp": 512, "onnxruntime": 256}   # tokens per prefill micro-batch / chunk


def _prompt(model: Any) -> list[int]:
    text = " ".join(f"Paragraph {i}: the committee reviewed the harbour accounts, the grain stores and the "
                    f"roads of district {i % 17}, and wrote down what each of them needed." for i in range(200))
    ids = model.tokenize(text)
    if len(ids) < PROMPT_TOKENS:
        raise SystemExit(f"the benchmark text has only {len(ids)} tokens")
    return ids[:PROMPT_TOKENS]


def _cancel_run(model: Any, prompt: list[int] | str, max_tokens: int, trigger: Any) -> tuple[float, Any]:
    """Stream on a worker thread; `trigger(first_token_event, counter)` decides when to cancel (in this thread).
    Returns (seconds from cancel() to the last chunk, that chunk)."""
    from edgellm.cancellation import CancelToken

    token = CancelToken()
    tokens = [0]
    got_tokens, started = threading.Event(), threading.Event()
    done: dict[str, Any] = {}

    def work() -> None:
        started.set()
        for chunk in model.stream(prompt, max_tokens=max_tokens, temperature=0.0, cancel=token):
            if chunk.finish_reason is not None:
                done["t"], done["chunk"] = time.perf_counter(), chunk
            else:
                tokens[0] += 1
                if tokens[0] >= 16:
                    got_tokens.set()

    worker = threading.Thread(target=work)
    worker.start()
    trigger(started, got_tokens)
    t_cancel = time.perf_counter()
    token.cancel()
    worker.join(120)
    if "t" not in done:
        raise SystemExit("the stream did not end after cancel()")
    return max(0.0, done["t"] - t_cancel), done["chunk"]


def bench(label: str, path: Path, reps: int, gguf: bool) -> list[dict[str, Any]]:
    import edgellm

    rng = random.Random(0)
    rows = []
    # cache_prompt=False (GGUF): every run prefills from scratch, as a new conversation does
    extra = {"cache_prompt": False} if gguf else {}
    with edgellm.load(path, n_ctx=4096, **extra) as model:
        backend = model.runtime.name
        ids = _prompt(model)
        model.generate(ids[:64], max_tokens=4, temperature=0.0)          # warm-up: the first call pays setup
        prefill_s = min(model.generate(ids, max_tokens=1, temperature=0.0).metrics.ttft_s or 0.0 for _ in range(2))
        chat = model.chat_prompt([{"role": "user", "content": "Write a long story about a lighthouse keeper."}])
        ref = model.generate(chat, max_tokens=48, temperature=0.0).metrics
        step_s = (ref.token_latency_ms.p50 or 0.0) / 1000

        decode_lat, prefill_lat, decoded = [], [], []
        for _ in range(reps):
            def after_tokens(_started: threading.Event, ev: threading.Event) -> None:
                ev.wait(30)
                time.sleep(rng.uniform(0, step_s))
            lat, last = _cancel_run(model, chat, 4000 - len(chat), after_tokens)
            if last.finish_reason != "cancelled":   # the answer ended before 16 tokens: nothing to measure
                continue
            decode_lat.append(lat)
            decoded.append(last.metrics.generated_tokens)

            def mid_prefill(started: threading.Event, _ev: threading.Event) -> None:
                started.wait(30)   # a 2,000-token prefill takes seconds: cancel 0.2 to 1 s into it
                time.sleep(rng.uniform(0.2, min(1.0, 0.5 * prefill_s)))
            lat, last = _cancel_run(model, ids, 8, mid_prefill)
            if last.finish_reason == "cancelled" and last.metrics.generated_tokens == 0:
                prefill_lat.append(lat)
            else:
                print(f"({backend}: a prefill ended before its cancel; not counted)", file=sys.stderr)
        unit_s = prefill_s * UNIT[backend] / PROMPT_TOKENS
        rows.append({"model": label, "backend": backend, "phase": "decode",
                     "median_ms": _ms(decode_lat, statistics.median), "max_ms": _ms(decode_lat, max),
                     "unit": "one decode step", "unit_ms": 1000 * step_s,
            "tokens_before_cancel": statistics.median(decoded) if decoded else None, "n": len(decode_lat)})
        rows.append({"model": label, "backend": backend, "phase": f"prefill of {PROMPT_TOKENS} tokens",
                     "median_ms": _ms(prefill_lat, statistics.median), "max_ms": _ms(prefill_lat, max),
                     "unit": f"one {UNIT[backend]}-token prefill batch", "unit_ms": 1000 * unit_s,
                     "full_prefill_ms": 1000 * prefill_s, "n": len(prefill_lat)})
    return rows


def _ms(values: list[float], how: Any) -> float:
    return 1000 * how(values) if values else float("nan")


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| model | backend | cancelled during | n | cancel -> return, median (max) | the bound: | its cost | ratio |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["median_ms"] / r["unit_ms"] if r["unit_ms"] else float("nan")
        out.append(f"| {r['model']} | {r['backend']} | {r['phase']} | {r['n']} | {r['median_ms']:.1f} ms ({r['max_ms']:.1f}) | "
                   f"{r['unit']} | {r['unit_ms']:.1f} ms | {ratio:.2f} |")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--onnx", type=Path, default=None)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from edgellm.default_model import default_artifact

    gguf = args.gguf or default_artifact("Q4_K_M")
    onnx = args.onnx or default_artifact("int4", format="onnx")
    rows = (bench("SmolLM2-135M GGUF Q4_K_M", gguf, args.reps, gguf=True)
            + bench("SmolLM2-135M ONNX int4", onnx, args.reps, gguf=False))
    print(table(rows))
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=2))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
