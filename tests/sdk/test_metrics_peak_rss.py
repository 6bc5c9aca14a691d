"""Metrics peak RSS counts the load: the kernel's peak mark is reset for each call, but the process's peak
before it (mapping, repacking, session creation) is what a plan budgets for, so peak_rss_bytes keeps it and
call_peak_rss_bytes is the call's own."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = r"""
import json, sys
import numpy as np
import edgellm
from edgellm.metrics import peak_rss
model = edgellm.load(sys.argv[1], device="cpu", n_ctx=128)
spike = np.ones(200 * 2**20 // 8)       # a 200 MiB transient after the load, freed before generating
del spike
before = peak_rss()
first = model.generate("Hello", max_tokens=4, temperature=0.0).metrics
second = model.generate("Hello", max_tokens=4, temperature=0.0).metrics
print(json.dumps({"before": before, "peak": [first.peak_rss_bytes, second.peak_rss_bytes],
                  "call": [first.call_peak_rss_bytes, second.call_peak_rss_bytes]}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak-RSS mark")
def test_peak_rss_includes_what_happened_before_the_call(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    from edgellm.converters.gguf import convert_to_gguf

    artifact = convert_to_gguf(tiny_models(), tmp_path / "q8", "Q8_0").path.parent
    out = subprocess.run([sys.executable, "-c", CHILD, str(artifact)], capture_output=True, text=True, timeout=120,
                         check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["before"] > 200 * 2**20
    for peak, call in zip(r["peak"], r["call"]):
        assert peak >= r["before"]                 # the load's (and the spike's) peak is kept
        assert call is not None and call < r["before"] - 100 * 2**20 and call <= peak   # the call's own is smaller
