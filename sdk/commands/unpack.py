"""`edgellm unpack MODEL.gguf|ARTIFACT OUTPUT`: rebuild a Hugging Face folder from a GGUF file or artifact folder."""
from __future__ import annotations

import argparse


def run_unpack(gguf_path: str, output: str, dtype: str = "BF16", overwrite: bool = False) -> int:
    from ..converting import unpack

    print(f"wrote {unpack(gguf_path, output, dtype=dtype, overwrite=overwrite)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("unpack", help="GGUF -> Hugging Face folder (dequantized, torch-free)")
    p.add_argument("gguf_path", metavar="MODEL.gguf", help="a .gguf file, or a GGUF artifact folder holding one")
    p.add_argument("output", help="Hugging Face folder to create")
    p.add_argument("--dtype", choices=("BF16", "F16", "F32"), default="BF16", help="dtype of the safetensors weights")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=run_unpack)
