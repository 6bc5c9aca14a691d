"""A family's canonical weights read from an HF folder, and the numpy reference forward pass built from the
family's block function (the same one the ONNX graph is emitted from)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ModelFormatError
from ..hf import HFModel
from .base import Family, TensorRule, check_tensors, to_canon
from .numpy_ops import NumpyOps, Quantizer


class Weights:
    """Canonical weights of one HF folder, by GGUF role, read (and shape-checked) on demand."""

    def __init__(self, model: HFModel, family: Family, args: Any) -> None:
        self.model, self.args = model, args
        # every tensor known, shaped as config.json says, none missing: checked before anything is written
        check_tensors(family, args, {n: tuple(i.shape) for n, i in model.tensor_infos().items()}, str(model.path))
        self.rules: dict[str, tuple[str, TensorRule]] = {}
        for hf, (gg, rule) in family.hf_to_gguf(args).items():
            self.rules[gg] = (hf, rule)

    def get(self, gguf_name: str) -> np.ndarray | None:
        """The canonical tensor, or None when it is optional and absent (or the family has no such tensor)."""
        if gguf_name not in self.rules:
            return None
        hf, rule = self.rules[gguf_name]
        if not self.model.has_tensor(hf):
            if rule.optional:
                return None
            raise ModelFormatError(f"tensor {hf} is missing from {self.model.path}")
        return to_canon(self.model.tensor(hf, expect_shape=tuple(rule.shape(self.args))), rule, self.args)

    def release(self, *gguf_names: str) -> None:
        """The mapped pages of these tensors leave the resident set (read again from the page cache if needed)."""
        for gg in gguf_names:
            if gg in self.rules:
                self.model.release(self.rules[gg][0])

    def release_layer(self, i: int) -> None:
        self.release(*(gg for gg in self.rules if gg.startswith(f"blk.{i}.")))

    def need(self, gguf_name: str) -> np.ndarray:
        w = self.get(gguf_name)
        if w is None:
            raise ModelFormatError(f"tensor {self.rules[gguf_name][0]} is missing from {self.model.path}")
        return w

    def layer(self, i: int) -> dict[str, np.ndarray]:
        """Block i's weights keyed by role ("attn_q.weight", ...), optional ones left out when absent."""
        prefix = f"blk.{i}."
        out = {}
        for gg in self.rules:
            if gg.startswith(prefix):
                w = self.get(gg)
                if w is not None:
                    out[gg[len(prefix):]] = w
        return out


def reference_logits(model_dir: str | Path, ids: list[int], quantize: Quantizer | None = None) -> np.ndarray:
    """Teacher-forced logits [len(ids), vocab] (float32) of an HF folder, computed in numpy; with `quantize`,
    each decoder linear computes with the weights it returns (what a quantized artifact stores)."""
    from ..architectures import get_family
    from ..hf import read_hf_model

    with read_hf_model(model_dir) as model:
        family = get_family(model.config.architecture)
        a = family.parse(model.config)
        weights, ops = Weights(model, family, a), NumpyOps(quantize)
        embed = weights.need("token_embd.weight")
        h = np.asarray(embed[np.asarray(ids)][None], np.float32)                  # [1, S, D]
        scale = family.embed_scale(a)
        if scale is not None:
            h = (h * np.float32(scale)).astype(np.float32)
        delta = None
        for i in range(a.layers):
            h, delta = family.block(ops, a, i, weights.layer(i), h, delta)
        x, _ = ops.add_norm(h, delta, weights.need(family.final_norm), a.eps, "norm")
        head = weights.get("output.weight")
        logits = x[0] @ np.asarray(embed if a.tied or head is None else head, np.float32).T
        factor = family.logit_scale(a)
        if factor is not None:
            logits = logits * np.float32(factor)
        cap = family.final_softcap(a)
        return (np.tanh(logits / cap) * cap).astype(np.float32) if cap else logits.astype(np.float32)
