"""The family registry, as data: HF class name -> family, GGUF architecture -> family.

Every module under converters/families/ that defines `FAMILIES` (a tuple of `Family`) is registered, so adding
a family is one new module there (plus its row in the conformance test table); nothing else branches on
architecture names. Modules load on first lookup, not at import.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from ..errors import UnsupportedArchitectureError
from .families.base import Family, permute_qk, unpermute_qk

__all__ = ["all_families", "Family", "get_family", "family_for_gguf", "permute_qk", "unpermute_qk"]


@lru_cache(maxsize=1)
def all_families() -> tuple[Family, ...]:
    from . import families

    found: list[Family] = []
    for info in sorted(pkgutil.iter_modules(families.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{families.__name__}.{info.name}")
        found.extend(getattr(module, "FAMILIES", ()))
    return tuple(found)


@lru_cache(maxsize=1)
def _by_hf_class() -> dict[str, Family]:
    out: dict[str, Family] = {}
    for f in all_families():
        for cls in f.hf_classes:
            if cls in out:
                raise UnsupportedArchitectureError(f"{cls} is claimed by two families: {out[cls].name}, {f.name}")
            out[cls] = f
    return out


@lru_cache(maxsize=1)
def _by_gguf_arch() -> dict[str, Family]:
    """GGUF architecture -> the family a GGUF of it is rebuilt as (the one marked rebuilds_gguf)."""
    out: dict[str, Family] = {}
    for f in all_families():
        if f.rebuilds_gguf:
            if f.gguf_arch in out:
                raise UnsupportedArchitectureError(
                    f"GGUF architecture {f.gguf_arch} is rebuilt by two families: {out[f.gguf_arch].name}, {f.name}")
            out[f.gguf_arch] = f
    return out


def get_family(hf_name: str) -> Family:
    family = _by_hf_class().get(hf_name)
    if family is None:
        raise UnsupportedArchitectureError(
            f"architecture {hf_name!r} is not supported; supported: {', '.join(sorted(_by_hf_class()))}")
    return family


def family_for_gguf(arch: str) -> Family:
    family = _by_gguf_arch().get(arch)
    if family is None:
        raise UnsupportedArchitectureError(
            f"GGUF architecture {arch!r} cannot be rebuilt; supported: {', '.join(sorted(_by_gguf_arch()))}")
    return family
