"""The GGUF conversion memory plan (converters/gguf_memory.py) against the peaks measured at real sizes
(tests/benchmarks/bench_scaling.py, random Llama-3.2-shaped bf16 checkpoints, peak RSS of the converting process):
the plan is built from the shapes alone, so it is checked here without writing the 1B or 3B checkpoints."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgellm.converters.gguf_memory import plan_gguf_memory
from edgellm.converters.gguf_types import get_quant
from edgellm.converters.safetensors_io import TensorInfo
from tests.fixtures.big_random import SHAPES

GB = 1e9
# shape, quant, rounding, calibration tokens -> measured peak RSS (GB)
MEASURED = [
    ("1b", "Q8_0", "native", 0, 0.96),
    ("1b", "Q4_K_M", "llama", 0, 1.89),
    ("3b", "Q8_0", "native", 0, 1.36),
    ("3b", "F16", "native", 0, 1.72),
    ("3b", "Q4_K_M", "llama", 0, 2.79),
    ("3b", "Q4_K_M", "gptq", 2048, 3.17),       # importance matrix + GPTQ rounding, the default for a checkpoint
]


def _model(name: str) -> tuple[SimpleNamespace, dict[str, TensorInfo]]:
    s = SHAPES[name]
    config = SimpleNamespace(hidden_size=s.hidden, intermediate_size=s.ffn, num_heads=s.heads,
                             num_kv_heads=s.kv_heads, head_dim=s.head_dim)
    infos = {n: TensorInfo(n, "BF16", shape, Path("x"), 0, 2 * int(np.prod(shape))) for n, shape in s.tensors()}
    return config, infos


@pytest.mark.parametrize(("shape", "quant", "method", "tokens", "peak_gb"), MEASURED)
def test_plan_errs_high_by_at_most_15_percent(shape: str, quant: str, method: str, tokens: int,
                                              peak_gb: float) -> None:
    config, infos = _model(shape)
    plan = plan_gguf_memory(config, infos, get_quant(quant), method, tokens)
    assert 0.97 * peak_gb * GB <= plan.total <= 1.15 * peak_gb * GB, (plan.total / GB, plan.describe())


def test_the_calibration_stage_grows_with_its_tokens_and_gptq_adds_hessians() -> None:
    config, infos = _model("1b")
    q = get_quant("Q4_0")
    small = plan_gguf_memory(config, infos, q, "gptq", 512)
    big = plan_gguf_memory(config, infos, q, "gptq", 65536)
    imatrix_only = plan_gguf_memory(config, infos, q, "llama", 65536)
    assert "hessians" in big.parts and big.total > small.total
    assert "hessians" not in imatrix_only.parts and imatrix_only.total < big.total
