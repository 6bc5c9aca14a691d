"""`FakeRuntime`: a TEST DOUBLE of the runtime interface (edgellm.runtimes.base.Runtime), with scripted tokens.

Why a double, in a project that tests on real models: `Model`'s generation loop has edge cases that a real model
reaches only by luck: a stop string split across two tokens, a UTF-8 character split across three, EOS at an exact
step, a cancel that lands in the middle of a prefill. Here the script says which token ids come and which bytes
each one decodes to, and the prefill is a number of chunks of a chosen duration, so each case is exact and runs in
milliseconds in the fast suite. It proves nothing about llama.cpp or onnxruntime: tests/sdk/test_cancel.py and
the slow tests run those on the real SmolLM2.

The double also watches the contract `Model` owes a runtime: it records any call made after `close()` (on a
native runtime that is a use-after-free, the segfault issue 14 found) and whether a generator was left open.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, ClassVar, Iterator, Sequence

import numpy as np

from edgellm.cancellation import CancelToken
from edgellm.model import Model
from edgellm.runtimes.base import Capabilities, SamplingParams, TokenizerInfo

BOS, EOS = 1, 2
FIRST_SCRIPT_ID = 3          # scripted pieces get ids 3, 4, ...
BYTE_BASE = 1000             # tokenize(): one id per UTF-8 byte, 1000 + byte
CHAT_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"


class FakeRuntime:
    """Yields the scripted ids, in order, after a simulated prefill of `prefill_chunks` chunks of `chunk_s`
    seconds each (cancel is checked between chunks, as onnxruntime's chunked prefill does) and `step_s` per
    decode step. A piece is `bytes` (a new token decoding to those bytes) or the int `EOS`. When the script runs
    out the runtime stops yielding (a real one would go on to the context's end)."""

    name: ClassVar[str] = "fake"
    capabilities: ClassVar[Capabilities] = Capabilities(streaming=True, logits=True, formats=("fake",),
                                                        cancellable=True)

    def __init__(self, pieces: Sequence[bytes | int], *, n_ctx: int = 256, prefill_chunks: int = 1,
                 chunk_s: float = 0.0, step_s: float = 0.0) -> None:
        self.vocab: dict[int, bytes] = {0: b"<unk>", BOS: b"", EOS: b""}
        self.script: list[int] = []
        for piece in pieces:
            if isinstance(piece, int):
                self.script.append(piece)
            else:
                self.vocab[FIRST_SCRIPT_ID + len(self.vocab) - 3] = piece
                self.script.append(max(self.vocab))
        self._n_ctx = n_ctx
        self.prefill_chunks, self.chunk_s, self.step_s = prefill_chunks, chunk_s, step_s
        self.prompts: list[list[int]] = []           # every generate() call's prompt
        self.chunks_done = 0                         # prefill chunks completed, all calls together
        self.steps_done = 0                          # decode steps completed
        self.in_prefill = threading.Event()          # set when a prefill starts (tests cancel on it)
        self.open_generators = 0
        self.closed = False
        self.used_after_close: list[str] = []        # calls a closed runtime received (must stay empty)

    def _touch(self, what: str) -> None:
        if self.closed:
            self.used_after_close.append(what)

    # -- the Runtime protocol ----------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def n_vocab(self) -> int:
        return BYTE_BASE + 256

    @property
    def provider(self) -> str:
        return "cpu"

    @property
    def tokenizer_info(self) -> TokenizerInfo:
        return TokenizerInfo(bos_id=BOS, eos_ids=(EOS,), bos_text="<s>", eos_text="</s>", add_bos=False,
                             chat_template=CHAT_TEMPLATE)

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        self._touch("tokenize")
        return ([BOS] if add_special else []) + [BYTE_BASE + b for b in text.encode("utf-8")]

    def token_bytes(self, token: int) -> bytes:
        self._touch("token_bytes")
        return bytes([token - BYTE_BASE]) if token >= BYTE_BASE else self.vocab.get(token, b"")

    def generate(self, prompt: list[int], params: SamplingParams,
                 cancel: CancelToken | None = None) -> Iterator[int]:
        self._touch("generate")
        self.prompts.append(list(prompt))
        self.open_generators += 1
        woke = threading.Event()
        unhook = cancel.on_cancel(woke.set) if cancel is not None else (lambda: None)
        try:
            self.in_prefill.set()
            for _ in range(self.prefill_chunks):
                if cancel is not None and cancel.cancelled:
                    return
                if self.chunk_s:
                    woke.wait(self.chunk_s)   # a chunk of native compute (a cancel ends the wait early)
                self._touch("prefill")
                self.chunks_done += 1
            self.in_prefill.clear()
            for token in self.script[: self.n_ctx - len(prompt)]:
                if cancel is not None and cancel.cancelled:
                    return
                if self.step_s:
                    woke.wait(self.step_s)
                self._touch("decode")
                self.steps_done += 1
                yield token
        finally:
            unhook()
            self.in_prefill.clear()
            self.open_generators -= 1

    def logits(self, tokens: list[int]) -> np.ndarray:
        self._touch("logits")
        return np.zeros((len(tokens), self.n_vocab), dtype=np.float32)

    def close(self) -> None:
        self.closed = True


class UncancellableFakeRuntime(FakeRuntime):
    """The same script from a runtime without the `cancellable` capability (a plugin written before it):
    `Model` must stop it between tokens and never pass it `cancel=`."""

    capabilities: ClassVar[Capabilities] = Capabilities(streaming=True, logits=True, formats=("fake",))

    def generate(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:  # type: ignore[override]  # the base generate() plus the cancel keyword of cancellable runtimes
        return super().generate(prompt, params)   # reason: the old protocol, with no cancel parameter


def model_over(runtime: FakeRuntime) -> Model:
    """A `Model` over a fake runtime (as edgellm.load would build it, minus the files)."""
    return Model(runtime, device="cpu", load_s=0.0, artifact="fake-model")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.001)
    return True
