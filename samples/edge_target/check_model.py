"""Run one model variant the same way on the build host and on the (emulated) target; write what it computed.

    python check_model.py MODEL --device profile:raspberry-pi-5 --out result.json

MODEL is a bundle (the device picks the variant) or an artifact folder. The result holds the teacher-forced
next-token choice at every position of a fixed text (argmax of the logits), 16 greedy tokens after a fixed
prompt, the versions, the machine and the wall times, so compare.py can set the two runs side by side.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import time
from pathlib import Path

# A varied English text (prose, numbers, code-ish tokens); its first N tokens are teacher-forced.
TEXT = (
    "The old lighthouse stood at the edge of the cliff, its lamp dark for nearly forty years. In 1987 the "
    "harbour authority replaced it with an automatic beacon, and the keeper, a quiet man named Thomas Hale, "
    "moved to the village below. Every evening he still walked up the path, counted the ships on the horizon "
    "and wrote their names in a notebook. When asked why, he said: \"Someone should remember them.\" "
    "Children from the school visited him on Fridays; he taught them to tie knots, to read the tide tables "
    "and to compute the distance to the horizon as 3.57 * sqrt(h) kilometres, where h is the height in metres."
)
PROMPT = "The three primary colors are"
GREEDY_TOKENS = 16


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def safe_kernel_argmax(model: object, ids: list[int], threads: int) -> list[int]:
    """The same GGUF through llama.cpp's other CPU path on this host (extra buffer types off: no Q4_0 repack):
    how much two valid kernel paths of one build disagree, the yardstick for the x86 / Arm comparison."""
    import numpy as np

    from edgellm.runtimes.llama_native import KernelPolicy, open_llama

    art = Path(str(getattr(model, "artifact", "")))
    gguf = art if art.suffix == ".gguf" else next(art.glob("*.gguf"))
    llm = open_llama(gguf, policy=KernelPolicy(use_extra_bufts=False, reasons=("kernel-path baseline",)),
                     n_ctx=512, n_threads=threads, logits_all=True)
    try:
        llm.eval(ids)
        return [int(i) for i in np.asarray(llm.scores[:len(ids)]).argmax(axis=-1)]
    finally:
        llm.close()


def run(model_path: str, device: str, n_tokens: int, threads: int, baseline: bool = False) -> dict:
    import numpy as np

    import edgellm

    t0 = time.perf_counter()
    model = edgellm.load(model_path, device=device, n_ctx=512, threads=threads)
    load_s = time.perf_counter() - t0
    ids = model.tokenize(TEXT)[:n_tokens]
    t1 = time.perf_counter()
    logits = np.asarray(model.runtime.logits(ids))          # (len(ids), vocab)
    forced_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    result = model.generate(PROMPT, max_tokens=GREEDY_TOKENS, temperature=0.0)
    greedy_s = time.perf_counter() - t2
    kernels = {}
    if model.runtime.name.startswith("llama"):
        from edgellm.runtimes.llama_native import build_info

        kernels = build_info().features   # the CPU backend llama.cpp loaded: NEON, DOTPROD, REPACK, ...
    return {
        "kernels": kernels,
        "machine": platform.machine(), "python": platform.python_version(), "device": device,
        "artifact": str(getattr(model, "artifact", model_path)), "backend": model.runtime.name,
        "versions": {d: _version(d) for d in ("edgellm", "onnxruntime", "llama-cpp-python", "numpy", "tokenizers")},
        "tokens": ids, "argmax": [int(i) for i in logits.argmax(axis=-1)],
        "top5": [[int(i) for i in row] for row in np.argsort(-logits, axis=-1)[:, :5]],
        "argmax_safe_kernels": safe_kernel_argmax(model, ids, threads)
        if baseline and model.runtime.name.startswith("llama") else None,
        "top2_margin": [float(m) for m in np.diff(np.sort(logits, axis=-1)[:, -2:], axis=-1)[:, 0]],
        "greedy_prompt": PROMPT, "greedy_tokens": list(result.tokens), "greedy_text": result.text,
        "seconds": {"load": round(load_s, 3), "teacher_forced": round(forced_s, 3), "greedy": round(greedy_s, 3)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="bundle or artifact folder")
    ap.add_argument("--device", default="cpu", help="cpu or profile:NAME (a bundle picks its variant by it)")
    ap.add_argument("--tokens", type=int, default=128, help="teacher-forced positions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--baseline", action="store_true",
                    help="GGUF: also run llama.cpp's other CPU kernel path here (the kernel-path yardstick)")
    args = ap.parse_args(argv)
    data = run(args.model, args.device, args.tokens, args.threads, args.baseline)
    Path(args.out).write_text(json.dumps(data, indent=1))
    print(f"{data['machine']} {data['backend']} {args.device}: {len(data['argmax'])} positions, "
          f"greedy {data['greedy_text']!r} ({data['seconds']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
