"""Layer-pruning ranking and trade table for SmolLM2 (1, 2, 4 blocks dropped).

    python tests/benchmarks/prune_smollm2.py [--quant Q8_0] [--tokens 256] [--threads 1] [--out docs/prune-smollm2.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgellm.pruning import trade_table  # noqa: E402
from tests.fixtures import smollm2  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", default="Q8_0")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ranking, results = trade_table(smollm2.smollm2_gguf(args.quant), (1, 2, 4), max_tokens=args.tokens,
                                   threads=args.threads)
    cmd = (f"python tests/benchmarks/prune_smollm2.py --quant {args.quant} --tokens {args.tokens} "
           f"--threads {args.threads}" + (f" --out {args.out}" if args.out else ""))
    out = [f"# Layer pruning: SmolLM2-135M-Instruct {args.quant} (30 blocks)", "",
           f"Command: `{cmd}`", "",
           f"Calibration: the first {args.tokens} tokens of the default evaluation text (standard-library "
           "docstrings of this machine's Python). KLD = mean KL(original || pruned) per token, nats. "
           f"Decode speed: chat prompt, 32 new tokens, {args.threads} thread(s), on a shared 2-core machine.", "",
           "## Trade table", "",
           "| blocks dropped | which | size MiB | size change | PPL | PPL change | mean KLD | top-1 | decode tok/s | speed change |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        spd = (f"{r.decode_tps_after:.1f} | {(r.decode_tps_after / r.decode_tps_before - 1) * 100:+.1f} %"
               if r.decode_tps_after and r.decode_tps_before else "n/a | n/a")
        out.append(f"| {len(r.dropped)} | {', '.join(map(str, r.dropped))} | {r.size_after / 2**20:.1f} | "
                   f"{(r.size_after / r.size_before - 1) * 100:+.1f} % | {r.ppl_after:.2f} | "
                   f"{(r.ppl_after / r.ppl_before - 1) * 100:+.1f} % | {r.kld:.4f} | {r.top1 * 100:.1f} % | {spd} |")
    base = results[0]
    out += ["", f"Unpruned: {base.size_before / 2**20:.1f} MiB, PPL {base.ppl_before:.2f}, "
                f"{base.decode_tps_before or 0:.1f} tok/s.", "",
            "## Ranking (cost of removing one block alone, cheapest first)", "",
            "| rank | block | mean KLD | PPL | top-1 |", "|---:|---:|---:|---:|---:|"]
    out += [f"| {i + 1} | {c.layer} | {c.kld:.4f} | {c.ppl:.2f} | {c.top1 * 100:.1f} % |"
            for i, c in enumerate(ranking)]
    text = "\n".join(out) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
