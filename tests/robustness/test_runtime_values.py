"""Runtime values from callers: sampling parameters, load options, prompts and token ids. Validated in one place
(runtimes/base.py, sdk/model.py) so both runtimes refuse the same value with the same error class; a native
library never sees a NaN temperature, a negative token id or a lone surrogate."""
from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import edgellm
from edgellm.errors import EdgeLLMError, GenerationError, ModelClosedError, OptionError
from edgellm.runtimes.base import LoadOptions, SamplingParams
from tests.robustness.native import ROOT
from tests.robustness.tally import assert_clean, classify, row

HOSTILE: list[Any] = [0, 1, -1, 2, 0.5, -0.5, 1.5, 2**31, 2**32, 2**63, -(2**63), 10**30, math.nan, math.inf, -math.inf,
                      True, None, "1", "", "ab", [], [""], ["a", 1], ("x",), {}, 1e-300, 2**32 - 1, 2**31 - 1, b"x"]
SAMPLING = ["max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed", "stop"]
LOADING = ["n_ctx", "threads", "n_gpu_layers", "execution_provider", "extra"]


def test_parameter_fuzz() -> None:
    rng = random.Random(5)
    for i in range(3000):
        if i % 3:
            kw = {k: rng.choice(HOSTILE) for k in rng.sample(SAMPLING, rng.randint(1, 3))}
            classify("sampling/load parameters", f"{kw}", lambda: SamplingParams(**kw))
        else:
            kw = {k: rng.choice(HOSTILE) for k in rng.sample(LOADING, rng.randint(1, 2))}
            classify("sampling/load parameters", f"{kw}", lambda: LoadOptions(**kw))
    assert_clean("sampling/load parameters")


@pytest.fixture(scope="module")
def models(seed_gguf: Path, seed_onnx: Path) -> dict[str, Any]:
    opened = {"gguf": edgellm.load(seed_gguf, device="cpu", n_ctx=64, threads=1),
              "onnx": edgellm.load(seed_onnx, device="cpu", n_ctx=64, threads=1)}
    yield opened
    for m in opened.values():
        m.close()


PROMPTS: list[Any] = ["hi", "", "a\udc80b", "\ud800", "\x00\x00", "<|im_start|>" * 3, "x" * 5000, [0], [], [-1],
                      [10**9], [2**63], [1.0], [True], ["a"], [None], b"hi", None, 42]


def test_same_values_same_errors_on_both_runtimes(models: dict[str, Any]) -> None:
    """Each hostile value through Model.generate on llama.cpp and onnxruntime: typed, and the same class."""
    rng = random.Random(9)
    cases: list[tuple[Any, dict[str, Any]]] = [(p, {}) for p in PROMPTS]
    stream_args = [k for k in SAMPLING if k != "repeat_last_n"]   # Model.stream's keywords
    cases += [("hi", {k: v}) for k in stream_args for v in HOSTILE]
    cases += [("hi", {k: rng.choice(HOSTILE) for k in rng.sample(stream_args, 2)}) for _ in range(40)]
    mismatched = []
    for prompt, kw in cases:
        kinds = {}
        for fmt, model in models.items():
            def call() -> None:
                model.generate(prompt, **{"max_tokens": 3, **kw})
            outcome = classify(f"runtime values ({fmt})", f"{prompt!r:.40} {kw}", call)
            kinds[fmt] = outcome
        if kinds["gguf"] != kinds["onnx"]:
            mismatched.append((prompt, kw, kinds))
    assert_clean("runtime values (gguf)")
    assert_clean("runtime values (onnx)")
    assert not mismatched, mismatched[:5]


def test_stop_string_is_one_string_and_empty_stops_are_ignored(models: dict[str, Any]) -> None:
    assert SamplingParams(stop="ab").stop == ("ab",)
    assert SamplingParams(stop=["", "x", "x"]).stop == ("x",)
    for model in models.values():
        free = model.generate("hi", max_tokens=6, temperature=0)
        assert model.generate("hi", max_tokens=6, temperature=0, stop=[""]).text == free.text


@pytest.mark.parametrize("threads", [0, -1, "many", True])
def test_thread_counts_are_refused(seed_gguf: Path, seed_onnx: Path, threads: Any) -> None:
    for path in (seed_gguf, seed_onnx):
        with pytest.raises(EdgeLLMError):
            edgellm.load(path, device="cpu", threads=threads)


def test_a_huge_thread_count_is_refused_or_capped_to_the_machine(seed_gguf: Path, seed_onnx: Path) -> None:
    import os

    for path in (seed_gguf, seed_onnx):
        try:
            model = edgellm.load(path, device="cpu", threads=10**6)
        except OptionError:
            continue
        with model:
            assert 1 <= model.runtime.threads <= (os.cpu_count() or 1)


def test_load_options_are_refused_with_option_error() -> None:
    for kw in ({"n_ctx": 0}, {"n_ctx": -5}, {"threads": 0}, {"threads": 10**6}, {"n_gpu_layers": -2}):
        with pytest.raises(OptionError):
            LoadOptions(**kw)


def test_use_after_close_is_typed(seed_gguf: Path, seed_onnx: Path) -> None:
    for path in (seed_gguf, seed_onnx):
        model = edgellm.load(path, device="cpu", n_ctx=64, threads=1)
        stream = model.stream("hi", max_tokens=8, temperature=0)
        next(stream)
        model.close()
        with pytest.raises(ModelClosedError):
            list(stream)
        for call in (lambda: model.generate("hi"), lambda: model.tokenize("x"), lambda: model.detokenize([1]),
                     lambda: model.logits([1, 2]), lambda: model.chat([{"role": "user", "content": "x"}])):
            with pytest.raises(ModelClosedError):
                call()
        model.close()   # idempotent


def test_a_second_generation_in_the_streaming_thread_is_refused(models: dict[str, Any]) -> None:
    for model in models.values():
        stream = model.stream("hi", max_tokens=4, temperature=0)
        next(stream)
        with pytest.raises(GenerationError, match="unfinished stream"):
            model.generate("x", max_tokens=2)
        assert list(stream)[-1].finish_reason is not None


THREADS_CHILD = """
import sys, threading, edgellm
m = edgellm.load(sys.argv[1], device="cpu", n_ctx=128, threads=1)
out, errors = {}, []
def run(i):
    try:
        for _ in range(3):
            out[i] = "".join(c.text for c in m.stream("Hello there", max_tokens=12, temperature=0.7, seed=i))
    except Exception as exc:
        errors.append(repr(exc))
ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
ref = "".join(c.text for c in m.stream("Hello there", max_tokens=12, temperature=0.7, seed=0))
assert not errors, errors
assert out[0] == ref, (out[0], ref)
print("OK")
"""


def test_one_model_shared_by_threads_streams_correctly(seed_gguf: Path, seed_onnx: Path) -> None:
    """Finding 1's class: concurrent stream() calls on one Model, in a child so an abort is counted."""
    for path in (seed_gguf, seed_onnx):
        r = row("threads sharing one Model")
        r.inputs += 1
        p = subprocess.run([sys.executable, "-c", THREADS_CHILD, str(path)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        if p.returncode < 0:
            r.crashes += 1
        elif p.returncode or "OK" not in p.stdout:
            r.untyped += 1
        else:
            r.accepted += 1
        if p.returncode or "OK" not in p.stdout:
            r.note(f"{path.name}: exit {p.returncode}: {p.stderr[-300:]}")
    assert_clean("threads sharing one Model")


def test_an_abandoned_stream_in_another_thread_gives_a_typed_error_not_a_hang(models: dict[str, Any]) -> None:
    import threading
    import time

    for model in models.values():
        model._lock.idle_s = 0.5
        started = threading.Event()
        streams: list[Any] = []

        def hold() -> None:
            s = model.stream("hi", max_tokens=8, temperature=0)
            next(s)
            streams.append(s)          # kept alive, never advanced: abandoned
            started.set()

        t = threading.Thread(target=hold)
        t.start()
        started.wait(10)
        t.join()
        t0 = time.perf_counter()
        with pytest.raises(GenerationError, match="not advanced"):
            model.generate("x", max_tokens=2)
        assert time.perf_counter() - t0 < 3
        streams[0].close()             # closing it frees the model for everyone
        assert model.generate("x", max_tokens=2).finish_reason
        model._lock.idle_s = 10.0


def test_close_while_another_thread_abandoned_a_stream(seed_gguf: Path, seed_onnx: Path) -> None:
    import threading

    for path in (seed_gguf, seed_onnx):
        model = edgellm.load(path, device="cpu", n_ctx=64, threads=1)
        model._lock.idle_s = 0.3
        streams: list[Any] = []
        t = threading.Thread(target=lambda: (streams.append(model.stream("hi", max_tokens=8, temperature=0)),
                                             next(streams[0])))
        t.start()
        t.join()
        import time
        time.sleep(0.5)
        model.close()                  # does not hang, does not raise
        with pytest.raises(ModelClosedError):
            list(streams[0])           # the abandoned stream stops at its next step
        with pytest.raises(ModelClosedError):
            model.generate("x")
