"""The llama.cpp runtime through the Model API: streaming, sampling, stops, context limits, chat, metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgellm
from edgellm.converters.gguf import convert_to_gguf
from edgellm.errors import ArtifactError, ContextOverflowError, GenerationError, ModelFormatError
from edgellm.runtimes.base import Runtime, available_runtimes


@pytest.fixture(scope="module")
def tiny_gguf(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("tiny-gguf") / "art"
    convert_to_gguf(tiny_models(), out, "F16")
    return out


@pytest.fixture(scope="module")
def smol(smollm2_artifact):  # noqa: ANN001, ANN201
    with edgellm.load(smollm2_artifact("F16"), n_ctx=512) as model:
        yield model


def test_registry_and_protocol(tiny_gguf: Path) -> None:
    assert "llama.cpp" in available_runtimes()
    with edgellm.load(tiny_gguf, n_ctx=64) as model:
        assert isinstance(model.runtime, Runtime)
        assert model.runtime.capabilities.formats == ("gguf",)


def test_stream_yields_frozen_chunks_then_a_final_one_with_metrics(tiny_gguf: Path) -> None:
    with edgellm.load(tiny_gguf, n_ctx=128) as model:
        chunks = list(model.stream("hello world", max_tokens=6, temperature=0.0))
        n_prompt = len(model.tokenize("hello world"))
    with pytest.raises(GenerationError, match="closed"):
        model.tokenize("hello world")
    *steps, last = chunks
    assert last.finish_reason in ("length", "stop") and last.metrics is not None and last.token is None
    assert all(c.finish_reason is None and c.token is not None for c in steps)
    with pytest.raises(AttributeError):
        steps[0].text = "x"  # type: ignore[misc]  # assigning a frozen field on purpose
    m = last.metrics
    assert m.generated_tokens >= len(steps) and m.prompt_tokens == n_prompt


def test_greedy_is_deterministic_and_seeded_sampling_reproducible(smol) -> None:  # noqa: ANN001
    a = smol.generate("The weather today", max_tokens=12, temperature=0.0)
    b = smol.generate("The weather today", max_tokens=12, temperature=0.0)
    assert a.tokens == b.tokens and len(a.tokens) == 12 and a.finish_reason == "length"
    s1 = smol.generate("The weather today", max_tokens=12, temperature=1.2, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    s2 = smol.generate("The weather today", max_tokens=12, temperature=1.2, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    assert s1.tokens == s2.tokens
    others = {smol.generate("The weather today", max_tokens=12, temperature=1.2, top_k=0, top_p=1.0, min_p=0.0,
                            seed=s).tokens for s in (1, 2, 3)}
    assert len(others | {s1.tokens}) > 1, "different seeds should not all give one sequence"


def test_greedy_matches_argmax_of_teacher_forced_logits(smol) -> None:  # noqa: ANN001
    prompt = smol.tokenize("Once upon a time, in a small village,")
    out = smol.generate(prompt, max_tokens=8, temperature=0.0)
    seq = list(prompt)
    for tok in out.tokens:
        assert int(np.argmax(smol.logits(seq)[-1])) == tok
        seq.append(tok)


def test_stop_string_cuts_text_and_is_not_emitted(smol) -> None:  # noqa: ANN001
    full = smol.generate("Count: one, two, three,", max_tokens=24, temperature=0.0).text
    word = full.strip().split()[2] if len(full.split()) > 3 else full.strip()[:3]
    out = smol.generate("Count: one, two, three,", max_tokens=24, temperature=0.0, stop=[word])
    assert out.finish_reason == "stop" and word not in out.text
    assert full.startswith(out.text) and len(out.text) < len(full)


def test_chat_uses_template_and_stops_at_end_of_turn(smol) -> None:  # noqa: ANN001
    ids = smol.chat_prompt([{"role": "user", "content": "Hi"}])
    text = smol.detokenize(ids)
    assert smol.runtime.tokenizer_info.chat_template and "assistant" in text
    reply = smol.chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=32,
                      temperature=0.0)
    assert reply.finish_reason == "stop" and "Paris" in reply.text and "<|im_end|>" not in reply.text


def test_metrics_are_filled_and_consistent(smol) -> None:  # noqa: ANN001
    r = smol.generate("Edge devices are", max_tokens=16, temperature=0.0)
    m = r.metrics
    assert m.backend == "llama.cpp" and m.load_s > 0 and m.ttft_s and m.ttft_s > 0
    assert m.prefill_tps and m.decode_tps and m.decode_tps > 0 and m.generated_tokens == 16
    lat = m.token_latency_ms
    assert len(lat.values) == 15 and lat.p50 <= lat.p90 <= lat.p99 <= lat.max
    assert abs(1000.0 / np.mean(lat.values) - m.decode_tps) / m.decode_tps < 0.01
    assert m.peak_rss_bytes and m.peak_rss_bytes > 100 * 2**20 and m.cpu_s > 0
    assert m.threads and "tok/s" in m.summary()


def test_prompt_longer_than_context_names_both_numbers(tiny_gguf: Path) -> None:
    with edgellm.load(tiny_gguf, n_ctx=32) as model:
        prompt = "hello world " * 40
        n = len(model.tokenize(prompt))
        with pytest.raises(ContextOverflowError) as err:
            model.generate(prompt, max_tokens=4)
        assert str(n) in str(err.value) and "32" in str(err.value)


def test_generation_stops_when_the_context_is_full(tiny_gguf: Path) -> None:
    with edgellm.load(tiny_gguf, n_ctx=32) as model:
        ids = model.tokenize("hello world hello world")
        out = model.generate(ids, max_tokens=100, temperature=0.0)
    assert out.finish_reason in ("context", "stop")
    assert len(ids) + len(out.tokens) <= 32


def test_invalid_sampling_parameters_are_typed_errors(tiny_gguf: Path) -> None:
    with edgellm.load(tiny_gguf, n_ctx=32) as model:
        with pytest.raises(GenerationError, match="top_p"):
            model.generate("hi", top_p=0.0)
        with pytest.raises(GenerationError, match="temperature"):
            model.generate("hi", temperature=-1)


def test_bad_artifacts_are_typed_errors(tmp_path: Path, tiny_models) -> None:  # noqa: ANN001
    with pytest.raises(ArtifactError, match="does not exist"):
        edgellm.load(tmp_path / "nope.gguf")
    with pytest.raises(ArtifactError, match="convert it first"):
        edgellm.load(tiny_models())
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelFormatError):
        edgellm.load(fake)


def test_missing_native_library_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path) -> None:
    import builtins

    from edgellm.errors import BackendUnavailableError
    from edgellm.runtimes.llama_cpp import open_llama_cpp
    from edgellm.runtimes.base import LoadOptions

    real_import = builtins.__import__

    def no_llama(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    with pytest.raises(BackendUnavailableError, match="pip install llama-cpp-python"):
        open_llama_cpp(next(tiny_gguf.glob("*.gguf")), LoadOptions(n_ctx=32))


def test_prompt_prefix_cache_is_reused_unless_disabled(smollm2_artifact) -> None:  # noqa: ANN001
    """Counted, not timed: llama.cpp's own counters of the tokens it evaluated (prompt batches + single steps)."""
    import llama_cpp

    def evaluated(model: edgellm.Model) -> int:
        data = llama_cpp.llama_perf_context(model.runtime._llm.ctx)
        return int(data.n_p_eval) + int(data.n_eval)

    prompt = "The history of the lighthouse on the northern cape begins in the winter of a stormy year " * 6
    with edgellm.load(smollm2_artifact("Q8_0"), n_ctx=512) as cached:
        first = cached.generate(prompt, max_tokens=2, temperature=0.0)
        before = evaluated(cached)
        again = cached.generate(prompt, max_tokens=2, temperature=0.0)
        reused_cost = evaluated(cached) - before
    with edgellm.load(smollm2_artifact("Q8_0"), n_ctx=512, cache_prompt=False) as fresh:
        fresh.generate(prompt, max_tokens=2, temperature=0.0)
        before = evaluated(fresh)
        cold = fresh.generate(prompt, max_tokens=2, temperature=0.0)
        cold_cost = evaluated(fresh) - before
    assert first.tokens == again.tokens == cold.tokens
    n = first.metrics.prompt_tokens
    assert cold_cost >= n and reused_cost <= 4, (n, reused_cost, cold_cost)
