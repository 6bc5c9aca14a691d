"""The llama.cpp backend, through llama-cpp-python. Opens GGUF files.

Models are opened through `llama_native.open_llama` (the one door to llama.cpp: native import with an
install hint, and the kernel policy that keeps known-bad CPU kernels from taking the process down).
"""
from __future__ import annotations

import ctypes
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from ..cancellation import CancelToken
from ..errors import GenerationError
from .base import Capabilities, LoadOptions, SamplingParams, TokenizerInfo, default_threads, register_runtime
from .llama_native import KernelPolicy, kernel_policy, llama_module, open_llama
from .options import LlamaCppOptions
from .sampling import token_logprobs

log = logging.getLogger(__name__)


class LlamaCppRuntime:
    name: ClassVar[str] = "llama.cpp"
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True, logits=True, gpu_offload=True, native_sampling=True, formats=("gguf",),
        constrained_json=True, logprobs=True, cancellable=True, speculative=True)

    def __init__(self, path: Path, options: LoadOptions, llama_module: Any) -> None:
        self._lc = llama_module
        self.path = path
        self.options = options
        self.backend_options: LlamaCppOptions = options.typed(LlamaCppOptions)
        self.threads = options.threads or default_threads()
        self.kernel_policy: KernelPolicy = kernel_policy(path)
        self._handle: Any = self._open(logits_all=False)
        # sliding window of the model when its windowed layers keep only window + batch cells (0: not limited)
        self._swa_window = 0 if self._handle.context_params.swa_full else \
            int(llama_module.llama_model_n_swa(self._handle._model.model))
        self._abort = AbortFlag(llama_module, self._handle._ctx.ctx)
        self._eval_llm: Any = None
        self._tok_info: TokenizerInfo | None = None
        self._eog: frozenset[int] | None = None

    def _open(self, logits_all: bool) -> Any:
        opts = self.backend_options
        kwargs: dict[str, Any] = opts.llama_kwargs()
        if opts.speculative == "prompt-lookup" and not logits_all:
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            kwargs["draft_model"] = LlamaPromptLookupDecoding(num_pred_tokens=opts.num_pred_tokens)
        return open_llama(self.path, policy=self.kernel_policy, n_ctx=self.options.n_ctx, n_threads=self.threads,
                          n_threads_batch=self.threads, n_gpu_layers=self.options.n_gpu_layers,
                          logits_all=logits_all, seed=0, **kwargs)

    @property
    def _llm(self) -> Any:
        if self._handle is None:
            raise GenerationError("this model was closed", "load it again with edgellm.load()")
        return self._handle

    # -- properties ----------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        # llama.cpp may pad its context (e.g. to 256) but llama-cpp-python sizes its buffers by the request
        return min(int(self._llm.n_ctx()), int(self.options.n_ctx))

    @property
    def provider(self) -> str:
        return "cuda" if self.options.n_gpu_layers and self._lc.llama_supports_gpu_offload() else "cpu"

    @property
    def description(self) -> str:
        """The backend as metrics name it: with the kernel switch when the safe one is in force."""
        return f"{self.name} (safe kernels: extra buffer types off)" if self.kernel_policy.safe else self.name

    @property
    def n_vocab(self) -> int:
        return int(self._llm.n_vocab())

    @property
    def eog_ids(self) -> frozenset[int]:
        if self._eog is None:
            vocab = self._llm._model.vocab
            self._eog = frozenset(i for i in range(self.n_vocab) if self._lc.llama_vocab_is_eog(vocab, i))
        return self._eog

    @property
    def tokenizer_info(self) -> TokenizerInfo:
        if self._tok_info is None:
            llm = self._llm
            meta = llm.metadata
            bos, eos = llm.token_bos(), llm.token_eos()

            def text(i: int) -> str:
                return llm._model.token_get_text(i) if i >= 0 else ""

            self._tok_info = TokenizerInfo(
                bos_id=bos if bos >= 0 else None, eos_ids=tuple(sorted(self.eog_ids | ({eos} if eos >= 0 else set()))),
                bos_text=text(bos), eos_text=text(eos),
                add_bos=meta.get("tokenizer.ggml.add_bos_token", "false") == "true",
                chat_template=meta.get("tokenizer.chat_template"))
        return self._tok_info

    # -- tokens --------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special))

    def token_bytes(self, token: int) -> bytes:
        return bytes(self._llm.detokenize([token], special=False))

    # -- compute -------------------------------------------------------------------------------
    def generate(self, prompt: list[int], params: SamplingParams,
                 cancel: CancelToken | None = None) -> Iterator[int]:
        """llama-cpp-python's generator. With `cancel`: cancelling raises the abort flag llama.cpp polls between
        the nodes of the graph it computes, so a prefill stops inside its batch and a decode inside its step;
        llama_decode then returns 2 (its finished micro-batches stay in the KV cache, which llama-cpp-python's
        next eval trims to the tokens it counted), and this generator returns."""
        llm = self._llm
        if not self.backend_options.cache_prompt or not self._window_holds_prefix(prompt):
            llm.reset()  # forget the evaluated prefix: a fresh prefill (what benchmarks of prefill need)
        llm.set_seed(params.seed if params.seed is not None else 0xFFFFFFFF)
        self._abort.clear()   # a cancel that raced the end of the previous call must not stop this one
        greedy = params.temperature == 0
        steps = llm.generate(
            prompt, top_k=1 if greedy else params.top_k, top_p=1.0 if greedy else params.top_p,
            min_p=0.0 if greedy else params.min_p, temp=params.temperature,
            repeat_penalty=params.repeat_penalty, reset=True, grammar=self._grammar(params.json_schema))
        if cancel is None:
            yield from steps
            return
        unhook = cancel.on_cancel(self._abort.raise_)
        try:
            while not cancel.cancelled:
                try:
                    token = next(steps)
                except StopIteration:
                    return
                except RuntimeError:
                    if cancel.cancelled:   # "llama_decode returned 2": aborted by our flag
                        return
                    raise
                yield token
        finally:
            unhook()
            steps.close()
            self._abort.clear()

    def _window_holds_prefix(self, prompt: list[int]) -> bool:
        """Whether llama-cpp-python may continue from the cached prefix it would reuse for `prompt`: always with a
        full cache; with windowed layers only if the cache still holds every position the window of the first
        re-evaluated token reaches back to (as llama.cpp's server checks), else the prompt is evaluated afresh."""
        llm = self._llm
        if not self._swa_window or llm.n_tokens == 0:
            return True
        cached = llm.input_ids[: llm.n_tokens]
        common = 0
        for a, b in zip(cached, prompt):
            if a != b:
                break
            common += 1
        if common == len(prompt) == llm.n_tokens:
            return True                     # nothing to roll back
        reuse = common - 1 if common == len(prompt) else common
        if reuse <= 0:
            return True                     # llama-cpp-python starts afresh by itself
        pos_min = int(self._lc.llama_memory_seq_pos_min(self._lc.llama_get_memory(llm._ctx.ctx), 0))
        return pos_min <= max(0, reuse - self._swa_window)

    def _grammar(self, schema: Any) -> Any:
        """llama.cpp's grammar for JSON output: any object ({}), or the given JSON schema."""
        if schema is None:
            return None
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        try:
            if not schema:
                return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except (ValueError, TypeError, RuntimeError, RecursionError) as exc:
            raise GenerationError(f"the JSON schema cannot be turned into a grammar: {exc}",
                                  "simplify the schema (types, properties, required, enum, arrays)") from None

    def token_logprobs(self, token: int, top: int) -> tuple[float, tuple[tuple[int, float], ...]]:
        """For the token `generate` just yielded: its log-probability and the `top` alternatives (the context
        still holds the logits row that produced it until the next step runs)."""
        row = np.ctypeslib.as_array(self._llm._ctx.get_logits_ith(-1), shape=(self.n_vocab,))
        return token_logprobs(row, token, top)

    def logits(self, tokens: list[int]) -> np.ndarray:
        if self._eval_llm is None:
            self._eval_llm = self._open(logits_all=True)
        llm = self._eval_llm
        llm.reset()
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)

    def close(self) -> None:
        for llm in (self._handle, self._eval_llm):
            if llm is not None:
                llm.close()
        self._handle = self._eval_llm = None


class AbortFlag:
    """The flag llama.cpp polls while it computes a graph (`llama_set_abort_callback`), one per context.

    ggml calls the callback before every node of the graph (about 600 times per token for a 30-layer model), on
    its compute thread. A Python callback would take the GIL each time, which costs decode speed and, while another
    Python thread (a UI) runs, can stall each node for the interpreter's 5 ms switch interval. So the callback is
    libc's `strlen` over a 2-byte buffer: `bool (*)(void *)` called on `size_t strlen(const char *)` returns the
    buffer's length, 0 (go on) or 1 (abort), in the return register where every ABI llama.cpp builds for
    (x86-64 System V and Windows, AArch64) reads a bool. No GIL, no Python frame. Where libc cannot be found, a
    Python callback reads the same buffer."""

    def __init__(self, llama_module: Any, ctx: Any) -> None:
        self._buf = ctypes.create_string_buffer(2)   # b"\0\0": strlen 0, go on; b"\1\0": strlen 1, abort
        cb_type = llama_module.ggml_abort_callback
        strlen = _libc_strlen()
        if strlen is not None:
            self._callback = ctypes.cast(strlen, cb_type)
        else:  # pragma: no cover - every platform we build for has a libc with strlen
            self._callback = cb_type(lambda _data: self._buf.raw[0] != 0)
        llama_module.llama_set_abort_callback(ctx, self._callback, ctypes.cast(self._buf, ctypes.c_void_p))

    def raise_(self) -> None:
        self._buf[0] = b"\x01"

    def clear(self) -> None:
        self._buf[0] = b"\x00"

    @property
    def raised(self) -> bool:
        return self._buf.raw[0] != 0


def _libc_strlen() -> int | None:
    """The address of the C library's strlen, or None."""
    import ctypes.util
    import sys

    names = ["msvcrt"] if sys.platform == "win32" else [None, ctypes.util.find_library("c")]
    for name in names:
        try:
            lib = ctypes.CDLL(name) if name != "msvcrt" else ctypes.cdll.msvcrt
            return ctypes.cast(lib.strlen, ctypes.c_void_p).value
        except (OSError, AttributeError):
            continue
    return None


def open_llama_cpp(path: Path, options: LoadOptions) -> LlamaCppRuntime:
    return LlamaCppRuntime(path, options, llama_module())


register_runtime(LlamaCppRuntime.name, open_llama_cpp, LlamaCppRuntime.capabilities.formats,
                 capabilities=LlamaCppRuntime.capabilities, options=LlamaCppOptions)
