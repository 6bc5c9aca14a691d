"""The `edgellm` command: a thin dispatcher.

Each subcommand lives in its own module under `edgellm.commands` and exposes
`register(subparsers)`, which adds a parser whose defaults carry `func`, the
library function to call with the parsed arguments (the CLI's signature is the library's).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Callable, Sequence

from .errors import EXTRAS, EdgeLLMError, missing_extra

# Registry as data: subcommand modules, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "edgellm.commands.convert",
    "edgellm.commands.run",
    "edgellm.commands.info",
    "edgellm.commands.unpack",
    "edgellm.commands.devices",
    "edgellm.commands.plan",
    "edgellm.commands.autoquant",
    "edgellm.commands.prune",
    "edgellm.commands.bundle",
    "edgellm.commands.image",
    "edgellm.commands.bench",
    "edgellm.commands.eval",
    "edgellm.commands.serve",
    "edgellm.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="edgellm", description="Deploy LLMs on the edge.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--version", action="version", version=f"edgellm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command not written yet in this build
                continue
            raise
        module.register(sub)
    for command in sub.choices.values():  # -v also after the subcommand (`edgellm run X "hi" -v`)
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log progress details")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Callable[..., int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    kwargs = {k: v for k, v in vars(args).items() if k not in ("func", "command", "verbose")}
    try:
        code = func(**kwargs)
        sys.stdout.flush()
    except EdgeLLMError as exc:
        sys.stderr.write(f"edgellm: error: {exc}\n")   # str(exc) already ends with the hint: printed once
        return 1
    except ImportError as exc:   # an optional extra (onnx, server) missing on a path that did not type it
        if (getattr(exc, "name", None) or "").split(".")[0] not in EXTRAS:
            raise
        sys.stderr.write(f"edgellm: error: {missing_extra(exc, f'`edgellm {args.command}`')}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edgellm ... --json | head`: the reader left; no traceback, no second error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
