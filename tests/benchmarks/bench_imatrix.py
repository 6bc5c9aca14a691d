"""KL divergence of llama.cpp quant types with and without edgellm's importance matrix (SmolLM2-135M).

    python tests/benchmarks/bench_imatrix.py [--types Q4_0,Q4_K_M,IQ4_NL,IQ3_XXS,IQ2_XS] [--calibration-tokens 2048]
                                             [--eval-tokens 512] [--threads 2] [--json out.json]

Reference: the F32 GGUF of the rebuilt SmolLM2 folder (its BF16 weights, exactly). Each type is quantized
from that F32 file by llama.cpp's quantizer in-process, once without and once with the importance matrix
edgellm's calibration pass computed (default calibration mix; disjoint from every evaluation text here).
Evaluation texts: our own prose (tests/fixtures/texts.PROSE, every token), edgellm eval's default text
(standard-library docstrings), and a licence (/usr/share/common-licenses/GPL-3), each cut to --eval-tokens.
KLD = mean KL(reference || quantized) per position, nats. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgellm.converters.gguf import convert_to_gguf  # noqa: E402
from edgellm.converters.gguf_types import get_quant  # noqa: E402
from edgellm.converters.imatrix import compute_imatrix  # noqa: E402
from edgellm.converters.imatrix_file import write_imatrix  # noqa: E402
from edgellm.converters.llama_quantize import quantize_gguf  # noqa: E402
from edgellm.errors import QuantizationError  # noqa: E402
from edgellm.evaluation import default_text, evaluate, reference_scores  # noqa: E402
from tests.fixtures import smollm2  # noqa: E402
from tests.fixtures.texts import PROSE  # noqa: E402

LICENCE = Path("/usr/share/common-licenses/GPL-3")


def texts() -> dict[str, str]:
    out = {"prose": PROSE, "docs": default_text()}
    if LICENCE.is_file():
        out["licence"] = LICENCE.read_text(encoding="utf-8")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default="Q4_0,Q4_K_M,IQ4_NL,IQ3_XXS,IQ2_XS")
    ap.add_argument("--calibration-tokens", type=int, default=2048)
    ap.add_argument("--eval-tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    hf = smollm2.smollm2_hf_dir()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgellm-bench-imatrix-") as tmp:
        work = Path(tmp)
        ref = convert_to_gguf(hf, work / "f32", "F32").path
        t0 = time.perf_counter()
        matrix = compute_imatrix(hf, tokens=args.calibration_tokens)
        imatrix_s = time.perf_counter() - t0
        write_imatrix(matrix, work / "smollm2.imatrix")
        refs = {name: reference_scores(ref, text=text, max_tokens=args.eval_tokens, n_ctx=512, threads=args.threads)
                for name, text in texts().items()}
        for qname in [t.strip().upper() for t in args.types.split(",") if t.strip()]:
            for use in (False, True):
                dst = work / f"{qname}-{'imatrix' if use else 'plain'}.gguf"
                row: dict = {"type": qname, "imatrix": use}
                try:
                    quantize_gguf(ref, dst, get_quant(qname).file_type, args.threads,
                                  imatrix=matrix.means() if use else None)
                except QuantizationError as exc:
                    text = str(exc)
                    row["refused"] = ("needs an importance matrix" if "imatrix" in text
                                      else text.splitlines()[0][:80])
                    rows.append(row)
                    continue
                row["size_mb"] = dst.stat().st_size / 1e6
                for name, scores in refs.items():
                    r = evaluate(dst, scores, threads=args.threads)
                    row[name] = {"kld": r.kld_mean, "top1": r.top1, "tokens": r.tokens}
                rows.append(row)
                dst.unlink()
    names = list(refs)
    print(f"SmolLM2-135M-Instruct, reference F32; importance matrix: {matrix.chunk_count} x {matrix.chunk_size} "
          f"calibration tokens, {len(matrix.sums)} tensors, {imatrix_s:.0f} s on this machine\n")
    print("| type | imatrix | size MB | " + " | ".join(f"KLD {n} ({len(refs[n].tokens)} tok)" for n in names)
          + " | " + " | ".join(f"top-1 {n}" for n in names) + " |")
    print("|---|---|---:|" + "---:|" * (2 * len(names)))
    for row in rows:
        if "refused" in row:
            print(f"| {row['type']} | {'yes' if row['imatrix'] else 'no'} | refused by llama.cpp: {row['refused']} |")
            continue
        print(f"| {row['type']} | {'yes' if row['imatrix'] else 'no'} | {row['size_mb']:.1f} | "
              + " | ".join(f"{row[n]['kld']:.4f}" for n in names) + " | "
              + " | ".join(f"{row[n]['top1']:.3f}" for n in names) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"imatrix_s": imatrix_s, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
