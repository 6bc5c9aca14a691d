"""`edgellm eval MODEL [MODEL ...] [--reference REF] [--text-file F] [--max-tokens N] [--n-ctx N] [--json|--markdown]`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..deprecation import add_n_ctx


def eval_models(models: list[str], reference: str | None = None, text_file: str | None = None,
                max_tokens: int = 1024, n_ctx: int = 512, threads: int | None = None, json_output: bool = False,
                markdown: bool = False) -> int:
    from ..evaluation import ReferenceScores, evaluate, format_table, reference_scores
    from ..progress import terminal

    text = Path(text_file).read_text(encoding="utf-8") if text_file else None
    rep = terminal()          # progress on stderr, results on stdout
    # the reference is scored once, not once per model
    ref: ReferenceScores | None = None
    if reference is not None:
        ref = reference_scores(reference, text=text, max_tokens=max_tokens, n_ctx=n_ctx, threads=threads,
                               progress=rep)
    results = [evaluate(m, ref, text=text, max_tokens=max_tokens, n_ctx=n_ctx, threads=threads, progress=rep)
               for m in models]
    if json_output:
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return 0
    source = text_file or "default text (standard-library docstrings of this Python)"
    if markdown:
        print(f"Text: {source}; {results[0].tokens} scored tokens, windows of {n_ctx}."
              + (f" Reference: `{Path(reference).name}`." if reference else "") + "\n")
    print(format_table(results, [Path(m).name for m in models]))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="perplexity, and KL divergence / top-1 agreement against a reference")
    p.add_argument("models", nargs="+", help="artifact folders or .gguf/.onnx files to evaluate")
    p.add_argument("--reference", help="high-precision artifact of the same model (e.g. the F16 GGUF)")
    p.add_argument("--text-file", help="UTF-8 text to score (default: standard-library docstrings)")
    p.add_argument("--max-tokens", type=int, default=1024, help="score at most this many tokens")
    add_n_ctx(p, "--ctx", default=512, help="window (context) size in tokens (default %(default)s)")
    p.add_argument("--threads", type=int, help="CPU threads")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", dest="json_output", action="store_true", help="print JSON")
    out.add_argument("--markdown", action="store_true", help="print a Markdown table with a header line")
    p.set_defaults(func=eval_models)
