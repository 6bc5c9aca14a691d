"""Cancelling on the real SmolLM2, llama.cpp (GGUF) and onnxruntime (ONNX): a cancel lands inside a prefill
(llama.cpp inside the micro-batch it computes, not after it), leaves the model's state intact, keeps partial
metrics from a decode, and `close()` while another thread streams cancels and waits instead of crashing (run in a
child process, so a segfault fails the test instead of ending the run). Latency numbers: bench_cancel.py."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import edgellm
from edgellm.cancellation import CancelToken

ROOT = Path(__file__).resolve().parents[2]
TEXT = " ".join(f"Item {i}: the harbour office counted the boats, the nets and the crates of district {i % 13}."
                for i in range(120))


def _artifacts(smollm2_artifact: Callable[[str], Path], smollm2_onnx: Callable[[str], Path]) -> dict[str, Any]:
    """fmt -> (artifact, load extras), each built only when asked for (cache_prompt=False: every call prefills)."""
    return {"gguf": lambda: (smollm2_artifact("Q4_K_M"), {"cache_prompt": False}),
            "onnx": lambda: (smollm2_onnx("int4"), {})}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_a_cancel_lands_inside_the_prefill_and_leaves_the_model_intact(fmt: str, smollm2_artifact,  # noqa: ANN001
                                                                       smollm2_onnx) -> None:  # noqa: ANN001
    path, extra = _artifacts(smollm2_artifact, smollm2_onnx)[fmt]()
    with edgellm.load(path, n_ctx=2048, **extra) as model:
        before = model.generate("The capital of France is", max_tokens=8, temperature=0.0).text
        ids = model.tokenize(TEXT)[:1024]          # two llama.cpp micro-batches of 512, four ORT chunks of 256
        assert len(ids) == 1024
        full = model.generate(ids, max_tokens=1, temperature=0.0).metrics.ttft_s
        assert full
        token = CancelToken()
        fired: list[float] = []
        timer = threading.Timer(0.1 * full, lambda: (fired.append(time.perf_counter()), token.cancel()))
        timer.start()
        result = model.generate(ids, max_tokens=8, temperature=0.0, cancel=token)
        latency = time.perf_counter() - fired[0]
        assert result.finish_reason == "cancelled" and result.tokens == () and result.metrics.ttft_s is None
        # stopping only between micro-batches (or chunks) would take ~40% (or ~15%) of the full prefill here
        assert latency < 0.25 * full, (latency, full)
        assert model.generate("The capital of France is", max_tokens=8, temperature=0.0).text == before


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_a_cancel_during_decode_keeps_partial_metrics(fmt: str, smollm2_artifact, smollm2_onnx) -> None:  # noqa: ANN001
    path, extra = _artifacts(smollm2_artifact, smollm2_onnx)[fmt]()
    with edgellm.load(path, n_ctx=1024, **extra) as model:
        prompt = model.chat_prompt([{"role": "user", "content": "Write a long story about a lighthouse."}])
        chunks = []
        for chunk in model.stream(prompt, max_tokens=300, temperature=0.0):
            chunks.append(chunk)
            if len(chunks) == 6:
                threading.Thread(target=model.cancel).start()   # from another thread
        last = chunks[-1]
        assert last.finish_reason == "cancelled" and last.metrics is not None
        assert 6 <= last.metrics.generated_tokens <= 8 and last.metrics.ttft_s and last.metrics.decode_tps
        assert model.last_metrics is last.metrics


CLOSE_CHILD = """
import sys, threading, time, edgellm
path, fmt = sys.argv[1], sys.argv[2]
extra = {"cache_prompt": False} if fmt == "gguf" else {}
for when in ("prefill", "decode"):
    m = edgellm.load(path, n_ctx=2048, **extra)
    ids = m.tokenize(sys.argv[3])[:1500] if when == "prefill" else m.tokenize("Once upon a time")
    seen, errors = [], []
    def work():
        try:
            for c in m.stream(ids, max_tokens=400, temperature=0.7, seed=1):
                seen.append(c)
        except edgellm.ModelClosedError:
            seen.append("closed")
        except Exception as exc:
            errors.append(repr(exc))
    t = threading.Thread(target=work)
    t.start()
    if when == "decode":
        while len(seen) < 3:
            time.sleep(0.001)
    else:
        time.sleep(0.2)
    t0 = time.perf_counter()
    m.close()
    took = time.perf_counter() - t0
    t.join(30)
    assert not t.is_alive() and not errors, errors
    last = seen[-1]
    assert last == "closed" or last.finish_reason == "cancelled", last
    print(when, "close took", round(took, 3), "last", getattr(last, "finish_reason", last), repr(m))
print("OK")
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_close_while_another_thread_streams_does_not_crash(fmt: str, smollm2_artifact, smollm2_onnx) -> None:  # noqa: ANN001
    path, _ = _artifacts(smollm2_artifact, smollm2_onnx)[fmt]()
    proc = subprocess.run([sys.executable, "-c", CLOSE_CHILD, str(path), fmt, TEXT], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert proc.stdout.count("cancelled") == 2 and proc.stdout.count("closed>") == 2, proc.stdout
