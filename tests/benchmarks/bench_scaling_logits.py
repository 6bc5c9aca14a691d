"""Do the artifacts bench_scaling.py converted (--keep) compute what the checkpoint computes? Teacher-forced
logits of each kept artifact (edgellm.load(...).logits) against the numpy float32 reference of the HF folder
(converters.families.weights.reference_logits, layer by layer, bf16 -> f32), on the same token ids:
correlation of the logits, top-1 agreement, mean KL divergence of the next-token distributions, and the largest
absolute difference relative to the reference's logit spread. Not part of the test run.

    python tests/benchmarks/bench_scaling_logits.py --shape 3b --keep /tmp/edgellm-keep [--tokens 32]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fixtures.big_random import SHAPES, write_big_llama  # noqa: E402


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def compare(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    lp, lq = _log_softmax(ref), _log_softmax(got)
    kld = float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)))
    corr = float(np.mean([np.corrcoef(g, r)[0, 1] for g, r in zip(got, ref)]))
    spread = float(np.mean(ref.max(axis=-1) - ref.min(axis=-1)))
    return {"corr": round(corr, 4), "top1": round(float(np.mean(got.argmax(-1) == ref.argmax(-1))), 3),
            "kld": round(kld, 4), "max_diff_of_spread": round(float(np.abs(got - ref).max()) / spread, 3)}


def main() -> None:
    import edgellm
    from edgellm.converters.families.weights import reference_logits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="3b", choices=[s for s in SHAPES if s != "7b"])
    ap.add_argument("--keep", required=True, help="bench_scaling.py's --keep folder")
    ap.add_argument("--cache", default=os.environ.get("EDGELLM_BIG_CACHE", str(Path(tempfile.gettempdir()) / "edgellm-big")))
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    src = write_big_llama(Path(args.cache) / args.shape, SHAPES[args.shape])
    rng = np.random.default_rng(1)
    ids = [int(t) for t in rng.integers(3, 250, args.tokens)]         # byte-level tokenizer: ids of bytes
    ref = reference_logits(src, ids)
    rows = []
    for art in sorted((Path(args.keep) / args.shape).iterdir()):
        with edgellm.load(art, n_ctx=max(64, args.tokens)) as model:
            got = model.logits(ids)
        row = {"artifact": art.name, **compare(got[:, : ref.shape[1]], ref)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"\n| {args.shape} artifact | logit corr | top-1 | mean KLD | max diff / logit spread |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['artifact']} | {r['corr']} | {r['top1']} | {r['kld']} | {r['max_diff_of_spread']} |")


if __name__ == "__main__":
    main()
