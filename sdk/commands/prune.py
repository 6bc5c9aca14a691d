"""`edgellm prune ARTIFACT OUT [--layers N|auto|i,j] [--max-kld X] [--max-ppl-increase X]`: the CLI over
`edgellm.prune` (same parameter names; `convert --prune-layers` also reaches it)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import add_measurement, add_quality_budget


def layers_arg(text: str) -> int | list[int] | str:
    """--layers: "auto", a count ("3") or block indices ("4,7")."""
    text = text.strip()
    if text == "auto":
        return "auto"
    try:
        if "," in text:
            return [int(x) for x in text.split(",") if x.strip()]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto', a number of blocks or indices such as 4,7") \
            from None


def run_prune(model: str, output: str, layers: int | list[int] | str = "auto", max_kld: float | None = None,
              max_ppl_increase: float | None = None, max_tokens: int = 128, threads: int | None = None,
              text_file: str | None = None, json_output: bool = False) -> int:
    from ..progress import terminal
    from ..pruning import prune
    from .convert import _print_prune

    text = Path(text_file).read_text(encoding="utf-8") if text_file else None
    r = prune(model, output, layers=layers, max_kld=max_kld, max_ppl_increase=max_ppl_increase, text=text,
              max_tokens=max_tokens, threads=threads, progress=terminal(notes=False))
    return _print_prune(r, Path(str(r.output)), json_output)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="drop the transformer blocks that cost least quality (GGUF)")
    p.add_argument("model", help="GGUF artifact folder or .gguf file")
    p.add_argument("output", help="folder for the pruned artifact (must be new or empty)")
    p.add_argument("--layers", type=layers_arg, default="auto", metavar="N|auto|i,j",
                   help="blocks to drop: a count, indices, or auto (as many as the budget allows; default)")
    add_quality_budget(p)
    add_measurement(p, max_tokens=128)
    p.set_defaults(func=run_prune)
