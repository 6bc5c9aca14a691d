"""The family registry, as data: HF class name -> family module (converters/families/), GGUF arch -> family.

Adding a family is one module under families/ plus one entry in FAMILIES; nothing else branches on
architecture names.
"""
from __future__ import annotations

from ..errors import UnsupportedArchitectureError
from .families.base import Family, permute_qk, unpermute_qk
from .families.gemma2 import GEMMA2
from .families.gemma3 import GEMMA3
from .families.granite import GRANITE
from .families.llama import LLAMA, MISTRAL
from .families.olmo2 import OLMO2
from .families.phi3 import PHI3
from .families.qwen2 import QWEN2
from .families.qwen3 import QWEN3
from .families.smollm3 import SMOLLM3

__all__ = ["FAMILIES", "Family", "get_family", "family_for_gguf", "permute_qk", "unpermute_qk"]

# Order matters only for GGUF -> HF: the first family of a GGUF architecture is the one it is rebuilt as.
FAMILIES: tuple[Family, ...] = (LLAMA, MISTRAL, QWEN2, QWEN3, GEMMA2, GEMMA3, SMOLLM3, GRANITE, OLMO2, PHI3)

BY_HF_CLASS: dict[str, Family] = {cls: f for f in FAMILIES for cls in f.hf_classes}
BY_GGUF_ARCH: dict[str, Family] = {}
for _f in FAMILIES:
    BY_GGUF_ARCH.setdefault(_f.gguf_arch, _f)


def get_family(hf_name: str) -> Family:
    family = BY_HF_CLASS.get(hf_name)
    if family is None:
        raise UnsupportedArchitectureError(
            f"architecture {hf_name!r} is not supported; supported: {', '.join(sorted(BY_HF_CLASS))}")
    return family


def family_for_gguf(arch: str) -> Family:
    family = BY_GGUF_ARCH.get(arch)
    if family is None:
        raise UnsupportedArchitectureError(
            f"GGUF architecture {arch!r} cannot be rebuilt; supported: {', '.join(sorted(BY_GGUF_ARCH))}")
    return family
