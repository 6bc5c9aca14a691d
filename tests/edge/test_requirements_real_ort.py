"""The requirement table against real onnxruntime releases: the newest release the check refuses really
refuses edgellm's int4 graph, and the oldest it accepts really loads it. Each release is installed once
(pip --target, this host's platform) into the edgellm cache; needs PyPI the first time."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from edgellm import convert
from edgellm.edge_requirements import check_runtime, requirements_for

pytestmark = pytest.mark.slow
LOAD = ("import sys, onnxruntime as o\no.set_default_logger_severity(3)\n"
        "o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\nprint('loaded', o.__version__)")


def _release(version: str) -> Path:
    root = Path(os.environ.get("EDGELLM_CACHE_DIR", Path.home() / ".cache/edgellm")) / "onnxruntime-releases"
    target = root / version
    if not (target / "onnxruntime").is_dir():
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                               str(target), f"onnxruntime=={version}"], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot install onnxruntime {version} (offline?): {proc.stderr[-300:]}")
    return target


@pytest.mark.parametrize("refused, accepted", [("1.28.0", "1.29.0")])
def test_minimum_matches_real_releases(refused: str, accepted: str, tiny_models: Callable[..., Path],
                                       tmp_path: Path) -> None:
    art = tmp_path / "int4"
    convert(tiny_models(), art, format="onnx", quant="int4", progress=False)
    reqs = requirements_for(art)
    assert check_runtime(reqs, {"onnxruntime": refused}) and not check_runtime(reqs, {"onnxruntime": accepted})
    results = {}
    for version in (refused, accepted):
        env = {**os.environ, "PYTHONPATH": str(_release(version))}
        results[version] = subprocess.run([sys.executable, "-c", LOAD, str(art / "model.onnx")],
                                          capture_output=True, text=True, env=env, timeout=300)
    assert results[refused].returncode != 0 and "Cos" in results[refused].stderr, results[refused].stderr[-500:]
    assert results[accepted].returncode == 0 and f"loaded {accepted}" in results[accepted].stdout, \
        results[accepted].stderr[-500:]
