"""Typed per-runtime load options: what `edgellm.load(path, **options)` may pass to one backend.

Each runtime names its option dataclass when it registers (runtimes.base.register_runtime). `parse_options`
turns the keyword arguments of a load into that dataclass, once, before the runtime opens anything: an unknown
key, or one that belongs to another backend (speculative= on an ONNX artifact), is an OptionError that lists the
keys this backend takes. The runtimes then read typed fields, never a dict."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from ..errors import OptionError

SPECULATIVE_MODES = ("prompt-lookup",)
T = TypeVar("T")


@dataclass(frozen=True)
class LlamaCppOptions:
    """llama.cpp (GGUF). type_k/type_v: KV cache element types (llama.cpp's ggml type ids or names such as
    "q8_0"); flash_attn: llama.cpp's flash attention; n_batch: prefill batch; speculative="prompt-lookup" with
    num_pred_tokens drafted tokens; cache_prompt=False forgets the evaluated prefix before every call.
    swa_full: whether sliding-window layers (Gemma 2/3, ...) keep KV cells for the whole context (llama.cpp's
    library default) or only for their window plus one batch. edgellm's default (None) is False, as llama.cpp's
    server does, except with speculative decoding (rejected drafts roll back, which a windowed cache cannot
    always serve); when a prompt reuses less of the cached prefix than the window still covers, the prefix is
    evaluated again rather than attended to with cells that are gone."""
    type_k: int | str | None = None
    type_v: int | str | None = None
    flash_attn: bool | None = None
    n_batch: int | None = None
    speculative: str | None = None
    num_pred_tokens: int = 10
    cache_prompt: bool = True
    swa_full: bool | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.speculative is not None and self.speculative not in SPECULATIVE_MODES:
            problems.append(f"speculative={self.speculative!r} must be one of {', '.join(SPECULATIVE_MODES)}")
        for name in ("n_batch", "num_pred_tokens"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                problems.append(f"{name}={v!r} must be a positive whole number")
        if self.speculative is not None and self.swa_full is False:
            problems.append("swa_full=False cannot be combined with speculative decoding (rejected drafts are "
                            "rolled back, which a windowed KV cache cannot always serve)")
        for name in ("flash_attn", "cache_prompt", "swa_full"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, bool):
                problems.append(f"{name}={v!r} must be True or False")
        if problems:
            raise OptionError("invalid llama.cpp options: " + "; ".join(problems))

    def llama_kwargs(self) -> dict[str, Any]:
        """The keywords llama-cpp-python's `Llama` takes directly (those set)."""
        kwargs = {k: getattr(self, k) for k in ("type_k", "type_v", "flash_attn", "n_batch")
                  if getattr(self, k) is not None}
        kwargs["swa_full"] = self.swa_full if self.swa_full is not None else self.speculative is not None
        return kwargs


@dataclass(frozen=True)
class OnnxOptions:
    """onnxruntime (ONNX). prefill_chunk: prompt tokens per prefill step (cancel lands between steps; the
    default is devices.memory.ORT_PREFILL_CHUNK, which the planner's estimate uses too); allow_spinning: whether idle intra-op threads spin (onnxruntime's
    default) or sleep; session_config: raw `add_session_config_entry` pairs."""
    prefill_chunk: int | None = None
    allow_spinning: bool | None = None
    session_config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        v = self.prefill_chunk
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            problems.append(f"prefill_chunk={v!r} must be a positive whole number, e.g. prefill_chunk=256")
        if self.allow_spinning is not None and not isinstance(self.allow_spinning, bool):
            problems.append(f"allow_spinning={self.allow_spinning!r} must be True or False")
        if not isinstance(self.session_config, Mapping):
            problems.append(f"session_config must be a dict of onnxruntime config entries, not "
                            f"{type(self.session_config).__name__}, e.g. {{'session.dynamic_block_base': '4'}}")
        if problems:
            raise OptionError("invalid onnxruntime options: " + "; ".join(problems))


# runtime name -> its option class; plugins register theirs through register_runtime(options=...)
OPTION_CLASSES: dict[str, type] = {"llama.cpp": LlamaCppOptions, "onnxruntime": OnnxOptions}


def option_names(cls: type | None) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if cls is not None else []


def parse_as(cls: type[T], given: Mapping[str, Any], runtime: str = "") -> T:
    """`given` as an instance of `cls`; OptionError listing cls's fields for a key it does not have."""
    valid = option_names(cls)
    unknown = [k for k in given if k not in valid]
    if unknown:
        raise OptionError(f"{runtime or cls.__name__} takes no option {unknown[0]}=",
                          "valid options: " + ", ".join(valid))
    return cls(**given)


def parse_options(runtime: str, given: Mapping[str, Any]) -> Any:
    """`given` (a load's extra keywords) as `runtime`'s option dataclass; None when it has none and none given.
    OptionError for a key the runtime does not take, naming the backend that does (if any) and the valid keys."""
    cls = OPTION_CLASSES.get(runtime)
    valid = option_names(cls)
    unknown = [k for k in given if k not in valid]
    if unknown:
        key = unknown[0]
        owners = [name for name, c in OPTION_CLASSES.items() if key in option_names(c)]
        where = (f"{key}= is a {' / '.join(owners)} option, and this artifact runs on {runtime}" if owners
                 else f"{runtime} takes no option {key}=")
        raise OptionError(where, "valid options for " + runtime + ": " + (", ".join(valid) or "none")
                          + (" (or load the format that backend opens)" if owners else ""))
    if cls is None:
        return None
    return cls(**given)
