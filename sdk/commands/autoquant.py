"""`edgellm autoquant MODEL OUT [--max-kld X] [--max-ppl-increase X] [--min-tps N] [--formats gguf,onnx]`: the CLI
over `edgellm.autoquant` (same parameter names; `convert --quant auto` also reaches it)."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from . import add_measurement, add_quality_budget


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def run_autoquant(model: str, output: str, max_kld: float | None = None, max_ppl_increase: float | None = None,
                  min_tps: float | None = None, formats: list[str] | None = None, candidates: list[str] | None = None,
                  reference: str | None = None, reference_quant: str = "F16", prefer: str = "smallest",
                  max_tokens: int = 256, threads: int | None = None, text_file: str | None = None,
                  json_output: bool = False) -> int:
    from ..progress import terminal
    from ..quant_search import autoquant

    text = Path(text_file).read_text(encoding="utf-8") if text_file else None
    result = autoquant(model, output, max_kld=max_kld, max_ppl_increase=max_ppl_increase, min_tps=min_tps,
                       formats=tuple(formats or ("gguf",)), candidates=candidates, reference=reference,
                       reference_quant=reference_quant, prefer=prefer, text=text, max_tokens=max_tokens,
                       threads=threads, progress=terminal(notes=False))
    if json_output:
        print(json.dumps({"path": str(result.path), "chosen": f"{result.chosen.format}:{result.chosen.quant}",
                          "table": [{k: v for k, v in asdict(c).items() if k != "path"} for c in result.table]},
                         indent=2, default=str))
        return 0
    print(result.format_table())
    print(f"kept {result.chosen.format}:{result.chosen.quant}: wrote {result.path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("autoquant", help="convert at each candidate quant, measure, keep the best within a budget")
    p.add_argument("model", help="Hugging Face model folder")
    p.add_argument("output", help="artifact folder to create (must be new or empty)")
    add_quality_budget(p)
    p.add_argument("--min-tps", dest="min_tps", type=float, default=None, help="slowest decode tokens/s to accept")
    p.add_argument("--formats", type=_names, default=None, metavar="gguf,onnx", help="formats to try (default gguf)")
    p.add_argument("--candidates", type=_names, default=None, metavar="Q4_K_M,Q8_0",
                   help="quant names to try (default: each format's ladder)")
    p.add_argument("--reference", default=None, help="high-precision artifact of the same model (default: made)")
    p.add_argument("--reference-quant", dest="reference_quant", default="F16", help="quant of the made reference")
    p.add_argument("--prefer", choices=("smallest", "fastest"), default="smallest",
                   help="which passing candidate to keep")
    add_measurement(p, max_tokens=256)
    p.set_defaults(func=run_autoquant)
