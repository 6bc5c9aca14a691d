"""`edgellm bundle MODEL OUT --targets a,b,c`: several variants for several targets, checksummed."""
from __future__ import annotations

import argparse
import json


def run_bundle(model: str, output: str, targets: str, overwrite: bool = False, json_output: bool = False) -> int:
    from ..bundling import bundle

    r = bundle(model, output, targets, progress=not json_output,
               overwrite=overwrite)
    if json_output:
        print(json.dumps({"path": str(r.path), "targets": r.targets, "variants": r.variants}, indent=2))
        return 0
    print(f"wrote {r.path}")
    for target, name in r.targets.items():
        v = r.variants[name]
        print(f"  {target:<22} -> {name} ({v['format']} {v['quant']}, {v['size_bytes'] / 2**20:.1f} MiB)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..bundling import DEFAULT_TARGETS

    p = sub.add_parser("bundle", help="build a multi-target bundle (variants picked by device at load)")
    p.add_argument("model", help="Hugging Face model folder")
    p.add_argument("output", help="bundle folder to create")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help="comma-separated device profiles (`edgellm devices --profiles` lists them)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", dest="json_output", action="store_true")
    p.set_defaults(func=run_bundle)
