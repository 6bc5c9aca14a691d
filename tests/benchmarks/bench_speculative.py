"""Prompt-lookup speculative decoding vs plain greedy decoding, through `edgellm.bench`.

    python tests/benchmarks/bench_speculative.py [--quant Q8_0] [--threads 1] [--out docs/bench-speculative.md]

Two tasks: an editing task whose answer copies the given text (where prompt lookup should help) and an
open question (where drafts from the prompt are rarely accepted). Several draft lengths are tried.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgellm.benchmark import BenchConfig, run_bench  # noqa: E402
from tests.fixtures import smollm2  # noqa: E402

EDIT_TEXT = ("The old lighthouse stood on the northern cliff for two hundred years. Every night the keeper climbed "
             "the spiral stairs, trimmed the wick, and polished the great lens until it shone. Ships passing the "
             "rocks saw the beam and turned away from danger. In winter the storms were fierce, and the keeper "
             "wrote in his logbook about the waves, the wind, and the ships that passed safely in the night.")
TASKS = {
    "edit (copy-heavy)": f"Repeat the following text exactly, but replace the word 'keeper' with 'guardian':\n\n{EDIT_TEXT}",
    "open question": "Explain in a few paragraphs why the sky is blue and why sunsets are red.",
}
SETTINGS = [("plain", {}), ("lookup n=2", {"num_pred_tokens": 2}), ("lookup n=4", {"num_pred_tokens": 4}),
            ("lookup n=10", {"num_pred_tokens": 10})]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", default="Q8_0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gen", type=int, default=120)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    path = str(smollm2.smollm2_gguf(args.quant))
    lines = ["| task | setting | decode tok/s | speed-up | tokens | same text as plain |", "|---|---|---:|---:|---:|---|"]
    for task, prompt in TASKS.items():
        base_tps = base_text = None
        for name, opts in SETTINGS:
            load = {"speculative": "prompt-lookup", **opts} if opts else {}
            cfg = BenchConfig(artifacts=(path,), threads=(args.threads,), gen_tokens=(args.gen,),
                              repetitions=args.reps, prompt_text=prompt, load_options=load, label=name)
            row = run_bench(cfg, progress=False).rows[0]
            if base_tps is None:
                base_tps, base_text = row.decode_tps, row.text
            lines.append(f"| {task} | {name} | {row.decode_tps:.1f} ± {row.decode_tps_sd:.1f} | "
                         f"{row.decode_tps / base_tps:.2f}x | {row.generated:.0f} | "
                         f"{'yes' if row.text == base_text else 'NO'} |")
            print(lines[-1], flush=True)
    header = (f"SmolLM2-135M-Instruct {args.quant}, llama.cpp via llama-cpp-python, {args.threads} thread(s), greedy, "
              f"{args.gen} new tokens max, mean ± sd of {args.reps} runs.\n\n"
              f"Command: `python tests/benchmarks/bench_speculative.py --quant {args.quant} --threads {args.threads} "
              f"--gen {args.gen} --reps {args.reps}" + (f" --out {args.out}`" if args.out else "`") + "\n\n")
    table = header + "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
