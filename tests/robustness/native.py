"""Run native loads in child processes so that a crash or hang is counted, not fatal to the test run."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from tests.robustness.tally import row

ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT_S = 30.0


def _run(path: Path) -> tuple[Path, int | None, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    try:
        p = subprocess.run([sys.executable, "-m", "tests.robustness.native_child", str(path)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        return path, p.returncode, p.stderr[-400:]
    except subprocess.TimeoutExpired:
        return path, None, "timeout"


def native_loads(name: str, paths: Sequence[Path], workers: int = 2) -> None:
    """Load each file in its own child and tally: 0 accepted, 3 typed, 4 untyped, signal crash, timeout hang."""
    r = row(name)
    with ThreadPoolExecutor(workers) as pool:
        for path, code, err in pool.map(_run, paths):
            r.inputs += 1
            if code == 0:
                r.accepted += 1
            elif code == 3:
                r.typed += 1
            elif code is None:
                r.hangs += 1
                r.note(f"{path.name}: no result in {CHILD_TIMEOUT_S}s")
            elif code < 0 or code > 128:
                r.crashes += 1
                r.note(f"{path.name}: died with {code}: {err}")
            else:
                r.untyped += 1
                r.note(f"{path.name}: exit {code}: {err}")
