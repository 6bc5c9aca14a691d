"""Build the artifact an edge target should ship: plan for its profile, convert, check it loads under the
profile's caps on this machine, and print the plan's reasons. Copy this into your build scripts.

The plan picks the same variant `edgellm bundle` and `edgellm devices --profiles` give the profile (its first
preferred artifact when the model fits, e.g. ONNX int4 for android-midrange), and sizes it from the tensor
types the converter will actually write.

    python samples/edge_build.py HF_FOLDER OUT --profile raspberry-pi-5 [--max-memory 1GiB] [--context 2048]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import edgellm


def build_for_profile(model: str | Path, output: str | Path, profile: str, max_memory: str | None = None,
                      context: int | None = None) -> dict[str, object]:
    device = f"profile:{profile}"
    plan = edgellm.plan(model, device=device, max_memory=max_memory, n_ctx=context)
    result = edgellm.convert(model, output, format=plan.format, quant=plan.quant,
                             **({"context_length": plan.n_ctx} if plan.format == "gguf" else {}))
    with edgellm.load(output, device=device, n_ctx=min(plan.n_ctx, 512)) as loaded:  # smoke test under the caps
        smoke = loaded.generate("Hello", max_tokens=4, temperature=0.0)
    return {"profile": profile, "format": plan.format, "quant": plan.quant, "threads": plan.threads,
            "n_ctx": plan.n_ctx, "artifact": str(result.path), "reasons": list(plan.reasons),
            "smoke_tokens": smoke.metrics.generated_tokens, "smoke_decode_tps": smoke.metrics.decode_tps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("output")
    parser.add_argument("--profile", required=True)
    parser.add_argument("--max-memory", default=None)
    parser.add_argument("--context", type=int, default=None)
    args = parser.parse_args()
    report = build_for_profile(args.model, args.output, args.profile, args.max_memory, args.context)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
