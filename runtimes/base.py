"""The contract every backend implements, its capability flags, and the registry keyed by name.

A runtime is deliberately small: it tokenizes, runs the model and yields sampled token ids. The
`Model` façade (edgellm.model) owns the generation loop around it: timing of every token, stop strings,
incremental UTF-8 decoding, chat templates and metrics, so every backend reports the same numbers.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Protocol, TypeVar, runtime_checkable

import numpy as np

from ..errors import ArtifactError, GenerationError, OptionError

T = TypeVar("T")


@dataclass(frozen=True)
class Capabilities:
    streaming: bool = True
    logits: bool = True            # can return per-position logits (eval, perplexity)
    gpu_offload: bool = False      # can place layers on a GPU
    native_sampling: bool = False  # samples inside the native library
    formats: tuple[str, ...] = ()  # artifact formats it opens ("gguf", "onnx")
    constrained_json: bool = False  # can hold its output to JSON / a JSON schema (SamplingParams.json_schema)
    logprobs: bool = False          # token_logprobs() right after each generated token
    cancellable: bool = False       # generate(..., cancel=CancelToken) stops inside prefill and native compute
    speculative: bool = False       # speculative decoding (load option speculative=...)


MAX_SEED = 2**32 - 1          # llama.cpp's seeds are u32; numpy's generator takes the same range
MAX_STOPS, MAX_STOP_CHARS = 64, 1024
MAX_COUNT = 2**31 - 1         # max_tokens, top_k, repeat_last_n: llama.cpp stores them as int32
MAX_THREADS = 1024
MAX_N_CTX = 1 << 24


def _int(problems: list[str], name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        problems.append(f"{name}={value!r} must be an integer")
    elif not lo <= int(value) <= hi:
        problems.append(f"{name}={value} must be between {lo} and {hi}")


def _float(problems: list[str], name: str, value: object, ok: Callable[[float], bool], rule: str) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        problems.append(f"{name}={value!r} must be a number")
    elif not math.isfinite(value) or not ok(float(value)):
        problems.append(f"{name}={value!r} must be {rule}")


def _plain(obj: object, names: tuple[str, ...], kind: type) -> None:
    """Numpy scalars (np.int64, np.float32) accepted above become plain Python numbers for the native libraries."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and type(value) is not kind:
            object.__setattr__(obj, name, kind(value))


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. temperature 0 means greedy.

    Validated here, once, for every runtime (so llama.cpp and onnxruntime refuse the same values with the same
    GenerationError): numbers must be finite and in range; `seed` None (fresh entropy), -1 (the same, as in
    llama.cpp) or 0..2^32-1; `stop` one string or a sequence of strings (empty strings are ignored)."""
    max_tokens: int = 128
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: Mapping[str, Any] | None = None  # None: free text; {}: any JSON object; else that schema

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.json_schema is not None and not isinstance(self.json_schema, Mapping):
            problems.append("json_schema must be a JSON schema object ({} for any JSON object) or None")
        _int(problems, "max_tokens", self.max_tokens, 0, MAX_COUNT)
        _float(problems, "temperature", self.temperature, lambda v: v >= 0, ">= 0 and finite")
        _int(problems, "top_k", self.top_k, 0, MAX_COUNT)
        _float(problems, "top_p", self.top_p, lambda v: 0.0 < v <= 1.0, "in (0, 1]")
        _float(problems, "min_p", self.min_p, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        _float(problems, "repeat_penalty", self.repeat_penalty, lambda v: v > 0, "> 0 and finite")
        _int(problems, "repeat_last_n", self.repeat_last_n, -1, MAX_COUNT)
        if self.seed is not None:
            _int(problems, "seed", self.seed, -1, MAX_SEED)
            if self.seed == -1:
                object.__setattr__(self, "seed", None)
        stop = () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else self.stop
        if not isinstance(stop, (tuple, list)) or not all(isinstance(s, str) for s in stop):
            problems.append(f"stop={self.stop!r} must be a string or a sequence of strings")
        elif len(stop) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stop):
            problems.append(f"stop holds {len(stop)} strings; at most {MAX_STOPS} of up to {MAX_STOP_CHARS} characters")
        else:
            object.__setattr__(self, "stop", tuple(dict.fromkeys(s for s in stop if s)))
        if problems:
            raise GenerationError("invalid sampling parameters: " + "; ".join(problems))
        _plain(self, ("max_tokens", "top_k", "repeat_last_n", "seed"), int)
        _plain(self, ("temperature", "top_p", "min_p", "repeat_penalty"), float)


DEFAULT_SAMPLING = SamplingParams()
"""edgellm's sampling defaults, the one place they are written: `Model.stream/generate` and `edgellm run` read them."""

OPENAI_SAMPLING = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, min_p=0.0)
"""The OpenAI API's defaults (only temperature and top_p shape the distribution): `edgellm serve` reads them so a
request means what it means on api.openai.com; max_tokens there defaults to what the context holds."""


@dataclass(frozen=True)
class LoadOptions:
    """How a runtime opens an artifact; validated here for every runtime (OptionError on a bad value)."""
    n_ctx: int = 2048
    threads: int | None = None          # None: the runtime's default for the device
    n_gpu_layers: int = 0               # llama.cpp offload; -1 = all
    execution_provider: str = "cpu"     # "cpu" | "cuda"
    extra: dict[str, object] = field(default_factory=dict)   # untyped keys; `backend` wins when set
    backend: Any = None                 # the runtime's typed options (runtimes.options: LlamaCppOptions, ...)

    def __post_init__(self) -> None:
        problems: list[str] = []
        _int(problems, "n_ctx", self.n_ctx, 1, MAX_N_CTX)
        if self.threads is not None:
            _int(problems, "threads", self.threads, 1, MAX_THREADS)
        _int(problems, "n_gpu_layers", self.n_gpu_layers, -1, 100_000)
        if not isinstance(self.execution_provider, str):
            problems.append(f"execution_provider={self.execution_provider!r} must be a string such as 'cpu'")
        if not isinstance(self.extra, dict):
            problems.append("extra must be a dict")
        if problems:
            raise OptionError("invalid load options: " + "; ".join(problems))
        _plain(self, ("n_ctx", "threads", "n_gpu_layers"), int)

    def typed(self, cls: type[T]) -> T:
        """This load's options for a runtime whose option class is `cls`: `backend` when it is one, else
        `extra` parsed into it (OptionError for a key `cls` does not have)."""
        if isinstance(self.backend, cls):
            return self.backend
        from .options import parse_as

        return parse_as(cls, self.extra)


@dataclass(frozen=True)
class TokenizerInfo:
    bos_id: int | None
    eos_ids: tuple[int, ...]
    bos_text: str
    eos_text: str
    add_bos: bool
    chat_template: str | None


@runtime_checkable
class Runtime(Protocol):
    """What `edgellm.load()` needs from a backend."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    @property
    def n_ctx(self) -> int: ...
    @property
    def tokenizer_info(self) -> TokenizerInfo: ...
    @property
    def provider(self) -> str:
        """Where it actually runs ("cpu", "cuda"), after any fallback."""
        ...

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]: ...
    def token_bytes(self, token: int) -> bytes:
        """The raw bytes one token decodes to (may be a partial UTF-8 sequence)."""
        ...
    def generate(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:
        """Prefill `prompt`, then yield sampled token ids until the caller stops iterating.

        The first id is yielded right after prefill; the caller times each step and stops on EOS,
        stop strings or max_tokens. The runtime never yields more than n_ctx - len(prompt) ids.

        A runtime whose capabilities say `cancellable` also accepts `cancel: CancelToken | None` (keyword) and,
        once it is cancelled (from any thread), returns within one decode step or one prefill chunk, interrupting
        native compute where it can, and stays usable for the next call. `Model` only passes `cancel` to those;
        others are stopped between tokens. Closing the generator early must free its per-call state."""
        ...
    def logits(self, tokens: list[int]) -> np.ndarray:
        """Teacher-forced logits, shape (len(tokens), vocab), float32."""
        ...
    def close(self) -> None: ...


class CancellableRuntime(Runtime, Protocol):
    """A runtime whose capabilities say `cancellable`: generate() also takes the call's cancel token."""
    def generate(self, prompt: list[int], params: SamplingParams,
                 *, cancel: Any = None) -> Iterator[int]: ...


class LogprobRuntime(Runtime, Protocol):
    """A runtime whose capabilities say `logprobs`."""
    def token_logprobs(self, token: int, top: int) -> tuple[float, tuple[tuple[int, float], ...]]: ...


def default_threads() -> int:
    """Physical cores when known (matmul kernels scale with them, not with SMT siblings)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - psutil may not know on exotic platforms
        n = None
    return max(1, n or (os.cpu_count() or 2) // 2)


RuntimeFactory = Callable[[Path, LoadOptions], Runtime]

# name -> factory; built-ins are registered lazily (their native libraries import inside the factory).
_REGISTRY: dict[str, RuntimeFactory] = {}
_FORMATS: dict[str, str] = {}


_CAPABILITIES: dict[str, Capabilities] = {}


def register_runtime(name: str, factory: RuntimeFactory, formats: tuple[str, ...], *,
                     capabilities: Capabilities | None = None, options: type | None = None) -> None:
    """Register a backend. Built-ins and plugins use this same call. capabilities: its flags, consulted before a
    load asks for a feature; options: its typed load-option dataclass (runtimes.options), None if it takes none."""
    from .options import OPTION_CLASSES

    _REGISTRY[name] = factory
    if capabilities is not None:
        _CAPABILITIES[name] = capabilities
    if options is not None:
        OPTION_CLASSES[name] = options
    for fmt in formats:
        _FORMATS.setdefault(fmt, name)


_BUILTINS_LOADED: list[bool] = []


def _builtins() -> None:
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED.append(True)
    from . import llama_cpp as _llama  # noqa: F401  (registers "llama.cpp")
    try:
        from . import onnxruntime as _ort  # noqa: F401  (registers "onnxruntime")
    except ImportError:  # module not present in this build
        pass


def available_runtimes() -> list[str]:
    _builtins()
    return sorted(_REGISTRY)


def runtime_capabilities(name: str) -> Capabilities | None:
    """The flags `name` registered (None for a plugin that registered none)."""
    _builtins()
    return _CAPABILITIES.get(name)


def runtime_for_format(fmt: str) -> str:
    _builtins()
    name = _FORMATS.get(fmt)
    if name is None:
        raise ArtifactError(f"no runtime opens {fmt!r} artifacts; known formats: {', '.join(sorted(_FORMATS))}")
    return name


def open_runtime(name: str, path: Path, options: LoadOptions) -> Runtime:
    _builtins()
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ArtifactError(f"unknown runtime {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return factory(path, options)
