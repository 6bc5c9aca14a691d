"""The one lock around llama.cpp's process-global state.

Two places swap process-wide llama.cpp state for the length of a call: the model loader
(runtimes/llama_native.py patches `llama_model_default_params` to apply the kernel policy) and the quantizer
(converters/llama_quantize.py installs its own log callback to read llama.cpp's fallback and imatrix lines).
Under two locks a load during a quantization would lose its log lines to the quantizer's parser, or run with
the other's patched defaults. The lock lives here, in a neutral module, because DESIGN.md forbids a converter
to import a runtime (and a runtime a converter); both already import this package's `errors` the same way.
Re-entrant: a load inside a held section (the kernel probe) must not deadlock."""
from __future__ import annotations

import threading

LLAMA_LOCK = threading.RLock()
