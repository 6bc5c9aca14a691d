"""A/B results of one artifact under two configurations: a row per quant (medians, b/a ratios), JSON + Markdown."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "bench-results"


def ab_row(quant: str, a: str, b: str, med: dict[tuple[str, str], float]) -> dict[str, Any]:
    """med[(config, "prefill" | "decode")] -> tokens/s."""
    return {"quant": quant, **{f"{n}_{k}": round(med[(n, k)], 1) for n in (a, b) for k in ("prefill", "decode")},
            "prefill_ratio": round(med[(b, "prefill")] / med[(a, "prefill")], 3),
            "decode_ratio": round(med[(b, "decode")] / med[(a, "decode")], 3)}


def write_ab(name: str, a: str, b: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Write bench-results/NAME.json and NAME.md; return the Markdown table."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**meta, "load_avg": os.getloadavg(), "rows": rows}, indent=2))
    lines = [f"| quant | prefill {a} | prefill {b} | ratio | decode {a} | decode {b} | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['quant']} | {r[f'{a}_prefill']} | {r[f'{b}_prefill']} | {r['prefill_ratio']:.3f} | "
              f"{r[f'{a}_decode']} | {r[f'{b}_decode']} | {r['decode_ratio']:.3f} |" for r in rows]
    table = "\n".join(lines)
    (RESULTS / f"{name}.md").write_text(table + "\n")
    return table
