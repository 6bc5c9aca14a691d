"""One native layer (issue 12): the loader and the quantizer hold one lock around llama.cpp's process globals,
and the thread sweep changes threads through llama_native, not its own ctypes call."""
from __future__ import annotations

import inspect
import threading

from edgellm import planning
from edgellm.converters import llama_quantize
from edgellm.native_lock import LLAMA_LOCK
from edgellm.runtimes import llama_native


def test_loader_and_quantizer_share_one_reentrant_lock() -> None:
    assert llama_native._OPEN_LOCK is LLAMA_LOCK and llama_quantize._LOCK is LLAMA_LOCK
    with LLAMA_LOCK:
        with LLAMA_LOCK:            # a load inside a held section (the kernel probe) must not deadlock
            held = threading.Thread(target=lambda: results.append(LLAMA_LOCK.acquire(timeout=0.05)))
            results: list[bool] = []
            held.start()
            held.join()
    assert results == [False]       # another thread waits while one holds it


def test_thread_sweep_uses_the_native_layer() -> None:
    source = inspect.getsource(planning.tune_threads)
    assert "set_threads(" in source and "llama_set_n_threads" not in source
