"""`make bench`: run every tests/benchmarks/bench_*.py in its own process; results land in bench-results/."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    failures = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=here.parent.parent)
        print(f"=== {script.name}: exit {rc} in {time.perf_counter() - t0:.0f}s ===", flush=True)
        if rc:
            failures.append(script.name)
    if failures:
        print("failed: " + ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
