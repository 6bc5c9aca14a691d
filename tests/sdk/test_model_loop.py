"""Model's generation loop on the FakeRuntime test double (tests/fakes.py): stop strings held back across
chunks, UTF-8 split across tokens, every finish reason, cancelling (before, during prefill, during decode, from
another thread), close() while streaming, and breaking out of a stream. Milliseconds each; no native code."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest

from edgellm.cancellation import CancelToken
from edgellm.errors import GenerationError, ModelClosedError, OptionError
from edgellm.model import Chunk, Model
from tests.fakes import EOS, UncancellableFakeRuntime, model_over, wait_until

MakeModel = Callable[..., Model]


def run(model: Model, prompt: str = "hi", **kwargs: Any) -> list[Chunk]:
    return list(model.stream(prompt, **kwargs))


# -- text: stop strings and UTF-8 --------------------------------------------------------------------
def test_a_stop_string_split_across_tokens_is_held_back_and_cut(fake_model: MakeModel) -> None:
    chunks = run(fake_model([b"Hel", b"lo ST", b"OP! more", b"never"]), stop=["STOP"])
    assert [c.text for c in chunks[:-1]] == ["Hel", "lo "]        # "ST" held back: it may become STOP
    assert chunks[-1].finish_reason == "stop" and chunks[-1].text == ""
    assert "".join(c.text for c in chunks) == "Hello "


def test_a_held_back_prefix_that_does_not_become_a_stop_is_released(fake_model: MakeModel) -> None:
    chunks = run(fake_model([b"a S", b"Tx", b"y"]), stop=["STOP"], max_tokens=3)
    assert [c.text for c in chunks] == ["a ", "STx", "y", ""]
    assert chunks[-1].finish_reason == "length"


def test_held_back_text_is_flushed_when_the_stream_ends_by_length(fake_model: MakeModel) -> None:
    chunks = run(fake_model([b"go S", b"T"]), stop=["STOP"], max_tokens=2)
    assert [c.text for c in chunks] == ["go ", "", "ST"] and chunks[-1].finish_reason == "length"


def test_utf8_split_across_three_tokens_is_never_emitted_broken(fake_model: MakeModel) -> None:
    smile = "🙂".encode()                  # 4 bytes: F0 9F 99 82
    chunks = run(fake_model([b"ok ", smile[:1], smile[1:3], smile[3:] + "é".encode()[:1], "é".encode()[1:], EOS]))
    texts = [c.text for c in chunks]
    assert texts == ["ok ", "", "", "🙂", "é", ""] and "\ufffd" not in "".join(texts)
    assert chunks[-1].finish_reason == "stop"


def test_a_character_cut_by_the_token_budget_becomes_one_replacement_char(fake_model: MakeModel) -> None:
    chunks = run(fake_model([b"ok", "🙂".encode()[:2]]), max_tokens=2)
    assert "".join(c.text for c in chunks) == "ok\ufffd" and chunks[-1].finish_reason == "length"


# -- finish reasons ------------------------------------------------------------------------------------
def test_finish_reasons_length_stop_eos_context(fake_model: MakeModel) -> None:
    pieces = [b"a", b"b", b"c", b"d", EOS]
    assert run(fake_model(pieces), max_tokens=2)[-1].finish_reason == "length"
    eos = run(fake_model(pieces), max_tokens=10)
    assert eos[-1].finish_reason == "stop" and "".join(c.text for c in eos) == "abcd"
    assert eos[-1].metrics is not None and eos[-1].metrics.generated_tokens == 5   # EOS is counted, not shown
    assert run(fake_model(pieces), stop=["c"])[-1].finish_reason == "stop"
    # a 6-token context with a 3-token prompt leaves room for 3 tokens: "context", not "length"
    ctx = run(fake_model(pieces, n_ctx=6), "abc", max_tokens=10)
    assert ctx[-1].finish_reason == "context" and len(ctx) == 4
    assert run(fake_model(pieces), max_tokens=0)[-1].finish_reason == "length"


def test_only_the_last_chunk_has_a_finish_reason_and_metrics(fake_model: MakeModel) -> None:
    chunks = run(fake_model([b"x", b"y", b"z"]), max_tokens=3)
    assert all(c.finish_reason is None and c.metrics is None for c in chunks[:-1])
    assert [c.index for c in chunks] == [0, 1, 2, 3] and chunks[-1].token is None


# -- cancelling ----------------------------------------------------------------------------------------
def test_a_token_cancelled_before_the_call_never_reaches_the_runtime(fake_model: MakeModel) -> None:
    model = fake_model([b"a", b"b"])
    token = CancelToken()
    token.cancel()
    result = model.generate("hi", cancel=token)
    assert result.finish_reason == "cancelled" and result.text == "" and result.metrics.generated_tokens == 0
    assert model.runtime.prompts == [] and result.metrics.ttft_s is None


def test_cancel_during_decode_keeps_partial_text_and_metrics(fake_model: MakeModel) -> None:
    model = fake_model([b"one ", b"two ", b"three ", b"four ", b"five "])
    chunks = []
    for chunk in model.stream("hi", max_tokens=5):
        chunks.append(chunk)
        if len(chunks) == 3:
            assert model.cancel() is True        # from inside the loop: the next step does not run
    assert [c.text for c in chunks] == ["one ", "two ", "three ", ""]
    last = chunks[-1]
    assert last.finish_reason == "cancelled" and last.metrics is not None
    assert last.metrics.generated_tokens == 3 and last.metrics.ttft_s is not None and last.metrics.decode_tps
    assert model.runtime.steps_done == 3 and model.runtime.open_generators == 0
    assert model.last_metrics is last.metrics


def test_cancel_from_another_thread_during_prefill_stops_within_one_chunk(fake_model: MakeModel) -> None:
    model = fake_model([b"never"], prefill_chunks=100, chunk_s=0.02)     # a 2-second prefill
    token = CancelToken()
    threading.Thread(target=lambda: (model.runtime.in_prefill.wait(5), time.sleep(0.05), token.cancel())).start()
    t0 = time.perf_counter()
    result = model.generate("a long prompt", cancel=token)
    elapsed = time.perf_counter() - t0
    assert result.finish_reason == "cancelled" and result.tokens == () and result.metrics.ttft_s is None
    assert model.runtime.chunks_done < 10 and elapsed < 1.0, (model.runtime.chunks_done, elapsed)
    assert result.metrics.prompt_tokens == len("a long prompt")
    assert model.generate("again", max_tokens=1).finish_reason == "length"   # the next call is not cancelled


def test_model_cancel_from_another_thread_and_a_token_reused_after_its_call(fake_model: MakeModel) -> None:
    model = fake_model([b"t"] * 50, step_s=0.01)
    token = CancelToken()
    threading.Timer(0.05, model.cancel).start()
    first = model.generate("hi", max_tokens=50, cancel=token)
    assert first.finish_reason == "cancelled" and 0 < len(first.tokens) < 50
    token.cancel()       # cancelling the token of a finished call touches nothing
    assert model.generate("hi", max_tokens=3).finish_reason == "length"
    assert model.cancel() is False                       # nothing in flight


def test_chat_passes_the_token(fake_model: MakeModel) -> None:
    token = CancelToken()
    token.cancel()
    reply = fake_model([b"a"]).chat([{"role": "user", "content": "hi"}], cancel=token)
    assert reply.finish_reason == "cancelled"
    with pytest.raises(OptionError):
        fake_model([b"a"]).generate("hi", cancel=threading.Event())


def test_a_runtime_without_the_capability_is_stopped_between_tokens() -> None:
    model = model_over(UncancellableFakeRuntime([b"a", b"b", b"c", b"d"], step_s=0.005))
    chunks = []
    for chunk in model.stream("hi", max_tokens=4):
        chunks.append(chunk)
        if len(chunks) == 2:
            model.cancel()
    assert chunks[-1].finish_reason == "cancelled" and len(chunks) == 3


# -- close() and abandoned streams ---------------------------------------------------------------------
def test_close_while_another_thread_streams_cancels_waits_then_frees(fake_model: MakeModel) -> None:
    model = fake_model([b"w"] * 200, step_s=0.01)
    seen: list[Chunk] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            seen.extend(model.stream("hi", max_tokens=200))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    worker = threading.Thread(target=consume)
    worker.start()
    assert wait_until(lambda: len(seen) >= 0 and model.runtime.steps_done >= 3)
    t0 = time.perf_counter()
    model.close()
    assert time.perf_counter() - t0 < 1.0
    worker.join(5)
    assert not worker.is_alive() and not errors
    assert seen[-1].finish_reason == "cancelled" and model.runtime.closed
    assert model.runtime.used_after_close == [] and model.runtime.open_generators == 0
    with pytest.raises(ModelClosedError):
        model.generate("hi")
    assert "closed" in repr(model)


def test_close_during_a_long_prefill_in_another_thread(fake_model: MakeModel) -> None:
    model = fake_model([b"x"], prefill_chunks=500, chunk_s=0.01)
    worker = threading.Thread(target=lambda: list(model.stream("hi")))
    worker.start()
    assert model.runtime.in_prefill.wait(5)
    t0 = time.perf_counter()
    model.close()
    assert time.perf_counter() - t0 < 1.0 and model.runtime.chunks_done < 50
    worker.join(5)
    assert model.runtime.used_after_close == []


def test_close_inside_the_streaming_loop_stops_the_stream(fake_model: MakeModel) -> None:
    model = fake_model([b"a", b"b", b"c"])
    stream = model.stream("hi", max_tokens=3)
    assert next(stream).text == "a"
    model.close()
    assert model.runtime.closed
    with pytest.raises(ModelClosedError):
        next(stream)
    assert model.runtime.used_after_close == []


def test_breaking_out_of_a_stream_frees_the_model_at_once(fake_model: MakeModel) -> None:
    model = fake_model([b"z"] * 100)
    for _chunk in model.stream("hi", max_tokens=100):
        break
    assert model.runtime.open_generators == 0          # the runtime's generator is closed, not left to the GC
    other: list[str] = []
    t = threading.Thread(target=lambda: other.append(model.generate("x", max_tokens=2).finish_reason))
    t0 = time.perf_counter()
    t.start()
    t.join(5)
    assert other == ["length"] and time.perf_counter() - t0 < 1.0
    with pytest.raises(GenerationError, match="unfinished stream"):   # unchanged: one stream per thread
        held = model.stream("x", max_tokens=5)
        next(held)
        model.generate("y", max_tokens=1)


def test_repr_names_the_artifact_backend_context_and_state(fake_model: MakeModel) -> None:
    model = fake_model([b"a"], n_ctx=128)
    text = repr(model)
    assert "fake-model" in text and "backend=fake" in text and "n_ctx=128" in text and "closed" not in text
    model.close()
    assert repr(model).endswith("closed>")
