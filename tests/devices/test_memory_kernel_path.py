"""The llama.cpp estimate follows the kernel path a load takes (issue 17): with extra buffer types on, llama.cpp
repacks Q4_K/Q4_0 matrices into an anonymous copy beside the mapped file; with them off (the safe switch a
kernel defect selects) no copy exists. Measured on real SmolLM2 Q4_0 and Q4_K_M, both ways, in fresh processes: the drop
in peak RSS is the estimate's weights_repacked term, and each estimate is within 15% of its own run."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.devices.memory import estimate_llama_cpp
from edgellm.planning import facts_from_gguf

CHILD = r"""
import json, sys
from edgellm.runtimes.llama_native import KernelPolicy, open_llama
path, extra = sys.argv[1], sys.argv[2] == "1"
policy = KernelPolicy() if extra else KernelPolicy(use_extra_bufts=False, reasons=("measured by a test",))
llm = open_llama(path, policy=policy, n_ctx=512, n_threads=1)
tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 4)[:16]
llm.eval(tokens)
for _ in range(4):
    llm.eval([tokens[-1]])
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"vmhwm": int(status["VmHWM"].split()[0]) * 1024, "prompt": len(tokens)}))
"""


def _peak(path: Path, extra: bool) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), "1" if extra else "0"], capture_output=True,
                         text=True, timeout=120, check=True)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return doc["vmhwm"], doc["prompt"]


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["Q4_0", "Q4_K_M"])   # Q4_0: every matrix repacked; Q4_K_M: the 1536-wide ones
def test_repacked_copy_is_counted_only_on_the_path_that_makes_it(smol_gguf, quant: str) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("repack tables known for x86_64 and aarch64 only")
    path = smol_gguf(quant)
    facts = facts_from_gguf(path)
    from edgellm.runtimes.llama_native import kernel_policy

    if not kernel_policy(path).use_extra_bufts:
        # this host's llama.cpp crashes with its extra buffer types on for these types (the AMX defect): only the
        # safe path can run here; check that loads take it and that its estimate holds
        off, prompt = _peak(path, False)
        est_off = estimate_llama_cpp(facts, 512, prompt_tokens=prompt, arch=platform.machine(), extra_bufts=False)
        print(f"\nSmolLM2 {quant}: safe switch only on this host, {off / 2**20:.1f} MiB (estimate "
              f"{est_off.total_bytes / 2**20:.1f})")
        assert est_off.term("weights_repacked") == 0 and abs(est_off.total_bytes / off - 1) <= 0.15
        return
    (on, prompt), (off, _) = _peak(path, True), _peak(path, False)
    est_on = estimate_llama_cpp(facts, 512, prompt_tokens=prompt, arch=platform.machine(), extra_bufts=True)
    est_off = estimate_llama_cpp(facts, 512, prompt_tokens=prompt, arch=platform.machine(), extra_bufts=False)
    repacked = est_on.term("weights_repacked")
    print(f"\nSmolLM2 {quant}: default kernels {on / 2**20:.1f} MiB (estimate {est_on.total_bytes / 2**20:.1f}), "
          f"safe switch {off / 2**20:.1f} MiB (estimate {est_off.total_bytes / 2**20:.1f}); measured drop "
          f"{(on - off) / 2**20:.1f} MiB, weights_repacked {repacked / 2**20:.1f} MiB")
    assert repacked > 0 and est_off.term("weights_repacked") == 0
    assert abs((on - off) - repacked) <= 0.25 * repacked
    assert abs(est_on.total_bytes / on - 1) <= 0.15 and abs(est_off.total_bytes / off - 1) <= 0.15
