"""Renamed parameters and CLI flags: the old name keeps working for one release and says what replaced it.

Python callers get a FutureWarning (shown by default, unlike DeprecationWarning, because the callers are
applications, not library internals); CLI users get one note on stderr. README lists every renamed name."""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, Sequence

from .errors import OptionError


def renamed(fn: str, old: str, new: str, old_value: Any, new_value: Any, *, stacklevel: int = 3) -> Any:
    """The value of parameter `new` when the caller used the deprecated name `old` (FutureWarning), or
    `new_value` when they did not. Both at once is an OptionError."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise OptionError(f"{fn}() got both {old}= and {new}=", f"pass only {new}= ({old}= is its deprecated name)")
    warnings.warn(f"{fn}({old}=...) is deprecated; use {new}= (the old name goes in the next release)",
                  FutureWarning, stacklevel=stacklevel)
    return old_value


class DeprecatedFlag(argparse.Action):
    """An old CLI flag kept as an alias of its replacement: stores into the same dest, notes the rename on stderr.
    Use: p.add_argument("--ctx", dest="n_ctx", type=int, action=DeprecatedFlag, new="--n-ctx")."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        sys.stderr.write(f"edgellm: note: {option_string} is deprecated, use {self.new} "
                         "(the old flag goes in the next release)\n")
        setattr(namespace, self.dest, values)


def add_n_ctx(p: argparse.ArgumentParser, *old: str, default: int | None = None,
              help: str = "context size in tokens (n_ctx)") -> None:  # noqa: A002 - argparse's own name
    """`--n-ctx N` (dest n_ctx), with `old` flags as deprecated aliases."""
    p.add_argument("--n-ctx", dest="n_ctx", type=int, default=default, metavar="N", help=help)
    for flag in old:
        p.add_argument(flag, dest="n_ctx", type=int, action=DeprecatedFlag, new="--n-ctx", default=default)
