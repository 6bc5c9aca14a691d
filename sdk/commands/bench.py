"""`edgellm bench ARTIFACT [ARTIFACT ...] [-t 1,2] [-p 64] [-n 32] [-d 0] [-r 3] [--reference REF]
[--speculative prompt-lookup --num-pred-tokens N] [--prompt-file F] [--json|--csv|--markdown] [--output F]
[--report out.html]`."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def bench(artifacts: list[str], threads: str = "0", prompt_tokens: str = "64", gen_tokens: str = "32",
          depths: str = "0", repetitions: int = 3, reference: str | None = None, speculative: str | None = None,
          num_pred_tokens: int | None = None, prompt_file: str | None = None, label: str = "",
          output_format: str = "text", output: str | None = None, report: str | None = None,
          no_progress: bool = False) -> int:
    """The CLI over `edgellm.bench` (same parameter names); output_format, output, report, no_progress are
    the CLI's own."""
    from ..benchmark import bench as run, to_csv, to_json, to_markdown, to_text

    result = run(artifacts, threads=threads, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, depths=depths,
                 repetitions=repetitions, reference=reference, speculative=speculative,
                 num_pred_tokens=num_pred_tokens, prompt_file=prompt_file, label=label,
                 progress=not no_progress and sys.stderr.isatty())
    result.command = "edgellm bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == [
        "bench"] else ""
    text = {"text": to_text, "markdown": to_markdown, "json": to_json, "csv": to_csv}[output_format](result)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
    print(text)
    if report:
        from ..report import write_report

        print(f"report: {write_report(result, report)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="benchmark artifacts: threads x prompt x generation x depth matrix")
    p.add_argument("artifacts", nargs="+", help="artifact folders or .gguf/.onnx files")
    p.add_argument("-t", "--threads", default="0", help="comma-separated thread counts (0 = default)")
    p.add_argument("-p", "--prompt-tokens", default="64", help="comma-separated prompt lengths")
    p.add_argument("-n", "--gen-tokens", default="32", help="comma-separated generated lengths")
    p.add_argument("-d", "--depths", default="0", help="comma-separated context depths")
    p.add_argument("-r", "--repetitions", type=int, default=3, help="runs per cell (mean ± sd)")
    p.add_argument("--reference", help="evaluate KLD/PPL of each artifact against this one")
    p.add_argument("--speculative", choices=["prompt-lookup"], help="speculative decoding (llama.cpp)")
    p.add_argument("--num-pred-tokens", type=int, help="draft length for prompt-lookup decoding")
    p.add_argument("--prompt-file", help="use this text as a chat prompt instead of cut token ids")
    p.add_argument("--label", default="", help="tag for the rows (default: the speculative mode)")
    fmt = p.add_mutually_exclusive_group()
    for flag, value in (("--json", "json"), ("--csv", "csv"), ("--markdown", "markdown")):
        fmt.add_argument(flag, dest="output_format", action="store_const", const=value)
    p.add_argument("-o", "--output", help="also write the table to this file")
    p.add_argument("--report", help="write an HTML report with plots to this path")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=bench, output_format="text")
