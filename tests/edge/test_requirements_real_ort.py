"""The requirement table against real onnxruntime releases: the newest release the check refuses really
refuses edgellm's int4 graph, and the oldest it accepts really loads it. Each release is installed once
(pip --target, this host's platform) into the edgellm cache; needs PyPI the first time."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from edgellm import convert
from edgellm.edge_requirements import check_runtime, requirements_for

pytestmark = pytest.mark.slow
# load the graph, run 5 tokens from an empty cache, save the logits (argv[2]) so releases can be compared
LOAD = """import sys, numpy as np, onnxruntime as o
o.set_default_logger_severity(3)
s = o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
ids = np.array([[5, 17, 33, 2, 100]])
feed = {'input_ids': ids, 'attention_mask': np.ones_like(ids), 'position_ids': np.arange(5)[None]}
for i in s.get_inputs():
    if i.name.startswith('past_key_values'):
        feed[i.name] = np.zeros([1, i.shape[1], 0, i.shape[3]], np.float32)
np.save(sys.argv[2], s.run(['logits'], feed)[0])
print('loaded', o.__version__)"""


def _release(version: str) -> Path:
    root = Path(os.environ.get("EDGELLM_CACHE_DIR", Path.home() / ".cache/edgellm")) / "onnxruntime-releases"
    target = root / version
    if not (target / "onnxruntime").is_dir():
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                               str(target), f"onnxruntime=={version}"], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot install onnxruntime {version} (offline?): {proc.stderr[-300:]}")
    return target


@pytest.mark.parametrize("refused, accepted", [("1.22.0", "1.23.2")])
def test_minimum_matches_real_releases(refused: str, accepted: str, tiny_models: Callable[..., Path],
                                       tmp_path: Path) -> None:
    art = tmp_path / "int4"
    convert(tiny_models(), art, format="onnx", quant="int4", progress=False)
    reqs = requirements_for(art)
    assert check_runtime(reqs, {"onnxruntime": refused}) and not check_runtime(reqs, {"onnxruntime": accepted})
    results = {}
    for version in (refused, accepted, "host"):
        env = {**os.environ, **({} if version == "host" else {"PYTHONPATH": str(_release(version))})}
        results[version] = subprocess.run([sys.executable, "-c", LOAD, str(art / "model.onnx"),
                                           str(tmp_path / f"{version}.npy")],
                                          capture_output=True, text=True, env=env, timeout=300)
    assert results[refused].returncode != 0 and "bits" in results[refused].stderr, results[refused].stderr[-500:]
    assert results[accepted].returncode == 0 and f"loaded {accepted}" in results[accepted].stdout, \
        results[accepted].stderr[-500:]
    assert results["host"].returncode == 0, results["host"].stderr[-500:]
    # the oldest accepted release computes what the installed one does
    old, new = np.load(tmp_path / f"{accepted}.npy"), np.load(tmp_path / "host.npy")
    assert old.shape == new.shape and np.abs(old - new).max() < 1e-3 * max(1.0, float(np.abs(new).max()))
