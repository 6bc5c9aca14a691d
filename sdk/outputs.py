"""Output folders of convert/unpack/bundle: refused when they would overwrite the source, cleaned of what a killed
run left behind, and every OS failure while writing turned into a typed error.

Writers stage their files as `OUT/<file>.partial` (GGUF, safetensors, manifest), `OUT.partial` (bundle, unpack)
or `.OUT.partial-<random>` beside OUT (ONNX) and rename them into place when complete, so a run killed at any
point leaves only such names; the next run into the same OUT removes them before it starts. One run per OUT at a
time: a second, concurrent run into the same OUT would remove the first one's staging files.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import EdgeLLMError, ModelFormatError, OutputPathError

log = logging.getLogger(__name__)

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(source: str | Path, output: str | Path) -> Path:
    """OUT as a Path; OutputPathError when it is the source folder or inside it (links resolved)."""
    src, out = Path(source).resolve(), Path(output).resolve()
    if src.is_dir() and _inside(out, src):
        raise OutputPathError(f"the output {output} is {'the source folder' if out == src else 'inside the source'} "
                              f"{source}; converting would overwrite the model's own files",
                              "choose an output folder outside the model folder")
    return Path(output)


def stale_partials(output: str | Path) -> list[Path]:
    """What a killed run into OUT leaves: OUT/*.partial, OUT/.edgellm-probe-* (the writability probe),
    OUT.partial and .OUT.partial-* beside OUT."""
    out = Path(output)
    found: list[Path] = []
    if out.is_dir():
        found += sorted(out.glob("*.partial")) + sorted(out.glob(".edgellm-probe-*"))
    if out.parent.is_dir():
        found += sorted(out.parent.glob(f".{out.name}.partial-*"))
        found += [p for p in (out.parent / f"{out.name}.partial",) if p.exists()]
    return found


def remove_stale_partials(output: str | Path) -> list[Path]:
    """Remove what `stale_partials` finds (logged); returns the removed paths."""
    removed = []
    for p in stale_partials(output):
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError as exc:
            raise OutputPathError(f"cannot remove {p}, left by an interrupted run: {exc.strerror or exc}") from None
    if removed:
        log.warning("removed %d file(s) left by an interrupted run into %s: %s", len(removed), output,
                    ", ".join(p.name for p in removed[:5]))
    return removed


@contextmanager
def writing_to(output: str | Path, source: str | Path | None = None) -> Iterator[Path]:
    """Prepare OUT (refuse the source, clean stale partials) and type the OS errors raised while writing it:
    a full disk or quota -> OutputPathError saying so; a failure reading the source -> ModelFormatError;
    any other -> OutputPathError."""
    out = check_output(source, output) if source is not None else Path(output)
    try:
        remove_stale_partials(out)
        yield out
    except EdgeLLMError:
        raise
    except OSError as exc:
        where = Path(exc.filename).resolve() if isinstance(exc.filename, str) else None
        if exc.errno in _FULL:
            raise OutputPathError(f"the disk is full (or over quota) while writing {output}: {exc.strerror or exc}",
                                  "free space or choose another output folder; nothing partial was kept") from None
        if where is not None and source is not None and _inside(where, Path(source).resolve()):
            raise ModelFormatError(f"cannot read {exc.filename}: {exc.strerror or exc}",
                                   "check the model folder's permissions") from None
        raise OutputPathError(f"cannot write {output}: {exc.strerror or exc}"
                              + (f" ({exc.filename})" if exc.filename else "")) from None


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Build a folder at OUT.partial, then replace OUT by it whole once the body finishes; on any error the
    partial folder is removed and OUT is left as it was. (Run inside `writing_to`, which removes a killed
    run's OUT.partial and types OS errors.)"""
    tmp = out.with_name(out.name + ".partial")
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
