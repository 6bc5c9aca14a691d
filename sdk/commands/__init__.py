"""The CLI's subcommands, one module each (registered by edgellm.cli); shared option groups below."""
from __future__ import annotations

import argparse


def add_quality_budget(p: argparse.ArgumentParser) -> None:
    """--max-kld / --max-ppl-increase: the quality a measured choice (autoquant, prune) may spend."""
    p.add_argument("--max-kld", dest="max_kld", type=float, default=None, help="largest mean KL divergence to accept")
    p.add_argument("--max-ppl-increase", dest="max_ppl_increase", type=float, default=None,
                   help="largest relative perplexity increase to accept (0.05 = 5%%)")


def add_measurement(p: argparse.ArgumentParser, max_tokens: int) -> None:
    """How a measured choice scores its candidates, and the JSON switch of its result."""
    p.add_argument("--max-tokens", dest="max_tokens", type=int, default=max_tokens, help="calibration tokens scored")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--text-file", dest="text_file", default=None, help="UTF-8 calibration text (default: built-in)")
    p.add_argument("--json", dest="json_output", action="store_true", help="print the result as JSON")
