"""The onnxruntime backend on tiny models: load, tokens, KV-cache decoding, generation, providers."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import edgellm
from edgellm.converters.onnx import convert_to_onnx
from edgellm.errors import BackendUnavailableError, OptionError
from edgellm.runtimes import onnxruntime as ort_rt
from edgellm.runtimes.base import LoadOptions, SamplingParams
from edgellm.runtimes.options import LlamaCppOptions, OnnxOptions
from tests.fixtures.decoding import steps_vs_rerun


@pytest.fixture(scope="module", params=[True, False], ids=["fused", "standard"])
def artifact(request, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "art"
    convert_to_onnx(tiny_models("LlamaForCausalLM"), out, "fp32", fused=request.param)
    return out


def test_step_decoding_matches_full_rerun(artifact, monkeypatch):
    with edgellm.load(artifact, n_ctx=64) as m:
        rows, want, tokens = steps_vs_rerun(m, m.tokenize("The quick brown fox"), 12, monkeypatch)
    assert rows.shape == want.shape
    assert np.abs(rows - want).max() < 1e-3
    assert [int(r.argmax()) for r in want] == tokens


def test_generation_stops_at_the_context(artifact):
    with edgellm.load(artifact, n_ctx=16) as m:
        prompt = m.tokenize("hello world")
        got = list(m.runtime.generate(prompt, SamplingParams(temperature=0.8, seed=1)))
        assert len(got) == 16 - len(prompt)
        r = m.generate("hello world", max_tokens=100, temperature=0.8, seed=1)
        assert r.finish_reason in ("context", "stop") and len(r.tokens) <= 16 - len(prompt)


def test_generate_and_chat_with_metrics(artifact):
    with edgellm.load(artifact, threads=1) as m:
        assert m.runtime.name == "onnxruntime" and m.runtime.threads == 1
        assert m.runtime.session.get_session_options().intra_op_num_threads == 1
        r = m.generate("The quick brown", max_tokens=8, temperature=0, stop=())
        assert len(r.tokens) == 8 and r.metrics.decode_tps and r.metrics.prefill_tps and r.metrics.ttft_s
        again = m.generate("The quick brown", max_tokens=8, temperature=0)
        assert again.tokens == r.tokens
        chat = m.chat([{"role": "user", "content": "hello"}], max_tokens=4, temperature=0.7, seed=3)
        assert chat.metrics.backend == "onnxruntime" and chat.metrics.generated_tokens >= 1
        ids = m.chat_prompt([{"role": "user", "content": "hi"}])
        assert ids[0] == m.runtime.tokenizer_info.bos_id     # <|im_start|> parsed as one special token


def test_token_bytes_reassemble_utf8(artifact):
    with edgellm.load(artifact) as m:
        text = "héllo wörld — 😀 def main():\n    return 42"
        ids = m.tokenize(text)
        assert b"".join(m.runtime.token_bytes(t) for t in ids) == text.encode("utf-8")
        assert m.detokenize(ids) == text
        info = m.runtime.tokenizer_info
        assert info.eos_ids and info.eos_ids[0] == 2 and info.chat_template and not info.add_bos
        assert m.runtime.token_bytes(info.eos_ids[0]) == b""   # special tokens render as nothing
        # special-token text stays text unless asked for
        assert m.runtime.tokenize("<|im_end|>", False, False) != [2]
        assert m.runtime.tokenize("<|im_end|>", False, True) == [2]


def test_cuda_selection_simulated():
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_rt.select_providers("cuda", both).providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert ort_rt.select_providers("cuda:0", both).device == "cuda"
    cpu_only = ort_rt.select_providers("cuda", ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert cpu_only.providers == ("CPUExecutionProvider",) and cpu_only.device == "cpu"
    assert "onnxruntime-gpu" in (cpu_only.note or "")
    assert ort_rt.select_providers("cpu", both) == ort_rt.ProviderChoice(("CPUExecutionProvider",), "cpu", None)


def test_cuda_request_falls_back_with_a_note_simulated(artifact):
    rt = ort_rt.open_onnxruntime(artifact / "model.onnx", LoadOptions(execution_provider="cuda", threads=1))
    try:
        assert rt.provider == "cpu" and "CUDAExecutionProvider" in (rt.provider_note or "")
    finally:
        rt.close()


def test_missing_onnxruntime_is_backend_unavailable(artifact, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailableError, match="onnxruntime") as exc:
        ort_rt.open_onnxruntime(artifact / "model.onnx", LoadOptions())
    assert "edgellm[onnx]" in exc.value.hint


def test_interleaved_generators_keep_their_own_cache(artifact):
    """Each generate() owns its KV buffers (shared past/present for GQA) and host arrays: two live at once
    must give what each gives alone, and the logits row a step shows is the last row of a full re-run."""
    with edgellm.load(artifact, n_ctx=48) as m:
        a, b = m.tokenize("The quick brown fox"), m.tokenize("hello world, once upon a")
        greedy = SamplingParams(temperature=0)
        alone_a = [t for _, t in zip(range(10), m.runtime.generate(a, greedy))]
        alone_b = [t for _, t in zip(range(10), m.runtime.generate(b, greedy))]
        ga, gb = m.runtime.generate(a, greedy), m.runtime.generate(b, greedy)
        mixed_a, mixed_b = [], []
        for _ in range(10):
            mixed_a.append(next(ga))
            mixed_b.append(next(gb))
        assert (mixed_a, mixed_b) == (alone_a, alone_b)
        full = m.logits(a + alone_a)
        assert [int(r.argmax()) for r in full[len(a) - 1:-1]] == alone_a


def test_prefill_of_one_token_and_a_context_of_exactly_prompt_plus_one(artifact):
    with edgellm.load(artifact, n_ctx=8) as m:
        one = m.tokenize("hello")[:1]
        got = list(m.runtime.generate(one, SamplingParams(temperature=0)))
        assert len(got) == 7
        full = m.logits(one + got[:-1])
        assert [int(r.argmax()) for r in full] == got
        seven = (m.tokenize("the quick brown fox jumps over the lazy dog") * 2)[:7]
        assert len(list(m.runtime.generate(seven, SamplingParams(temperature=0)))) == 1


def test_session_config_from_load_extra(artifact):
    assert ort_rt.session_config(OnnxOptions()) == {}
    assert ort_rt.session_config(OnnxOptions(allow_spinning=False,
                                             session_config={"session.dynamic_block_base": 4})) == {  # type: ignore[dict-item]  # a number is written as its string
        "session.intra_op.allow_spinning": "0", "session.dynamic_block_base": "4"}
    with pytest.raises(OptionError):
        OnnxOptions(session_config=["session.dynamic_block_base"])  # type: ignore[arg-type]  # the wrong type is the test
    rt = ort_rt.open_onnxruntime(artifact / "model.onnx", LoadOptions(threads=2, extra={"allow_spinning": False}))
    try:
        so = rt.session.get_session_options()
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert so.intra_op_num_threads == 2
    finally:
        rt.close()


def test_kv_buffers_sized_to_max_tokens_and_grow_past_it(artifact, monkeypatch):
    """The shared KV buffers hold prompt + max_tokens (rounded up to KV_ROUND), not n_ctx; a caller iterating past
    max_tokens makes them grow, and the logits after growing still equal a full re-run."""
    monkeypatch.setattr(ort_rt.OnnxRuntime, "KV_ROUND", 4)
    with edgellm.load(artifact, n_ctx=64) as m:
        rt = m.runtime
        prompt = m.tokenize("The quick brown fox")
        if rt.shared_kv:
            assert rt._kv_capacity(len(prompt), SamplingParams(max_tokens=2)) == -(-(len(prompt) + 2) // 4) * 4
            assert rt._kv_capacity(len(prompt), SamplingParams(max_tokens=10_000)) == 64
        rows, want, tokens = steps_vs_rerun(m, prompt, 20, monkeypatch,     # 20 steps: several doublings
                                            SamplingParams(temperature=0, max_tokens=2))
    assert np.abs(rows - want).max() < 1e-3
    assert [int(r.argmax()) for r in rows] == tokens


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_prefill_matches_one_pass(artifact, monkeypatch, chunk):
    """The prompt goes through the graph `prefill_chunk` tokens at a time (bounding the logits buffer); every
    decode row must equal the full re-run's, whatever the chunking."""
    with edgellm.load(artifact, n_ctx=64, prefill_chunk=chunk) as m:
        assert m.runtime.prefill_chunk == chunk
        prompt = m.tokenize("The quick brown fox jumps over the lazy dog again")
        assert len(prompt) > 7
        rows, want, _ = steps_vs_rerun(m, prompt, 6, monkeypatch)
    assert np.abs(rows - want).max() < 1e-3


def test_bad_prefill_chunk_is_a_typed_error(artifact):
    with pytest.raises(OptionError, match="prefill_chunk"):
        edgellm.load(artifact, n_ctx=64, prefill_chunk=0)


def test_llama_cpp_options_on_an_onnx_artifact_are_refused_with_the_valid_ones(artifact):
    for key, value in (("speculative", "prompt-lookup"), ("n_batch", 64), ("no_such_option", 1)):
        with pytest.raises(OptionError) as err:
            edgellm.load(artifact, n_ctx=64, **{key: value})
        assert key in err.value.message and "prefill_chunk" in err.value.hint
    with pytest.raises(OptionError, match="does not apply to the onnxruntime backend"):
        edgellm.load(artifact, n_ctx=64, options=LlamaCppOptions(n_batch=64))
    with edgellm.load(artifact, n_ctx=64, options=OnnxOptions(prefill_chunk=5)) as m:   # the typed form
        assert m.runtime.prefill_chunk == 5


def test_graph_with_symbolic_kv_dims_reads_sizes_from_genai_config(artifact, tmp_path):
    """onnxruntime-genai's builder leaves past KV dims symbolic; the sizes then come from genai_config.json."""
    import json
    import shutil

    import onnx

    from edgellm.errors import ModelFormatError

    copy = tmp_path / "symbolic"
    shutil.copytree(artifact, copy)
    model = onnx.load(str(copy / "model.onnx"), load_external_data=False)
    for i in model.graph.input:
        if i.name.startswith("past_key_values."):
            dims = i.type.tensor_type.shape.dim
            dims[1].dim_param, dims[3].dim_param = "kv_heads", "head_dim"
    onnx.save(model, str(copy / "model.onnx"))
    with edgellm.load(copy, n_ctx=64) as m:
        expected = m.generate("hello world", max_tokens=4, temperature=0.0).tokens
    cfg = json.loads((copy / "genai_config.json").read_text())
    decoder = cfg["model"]["decoder"]
    with edgellm.load(artifact, n_ctx=64) as m:
        assert m.generate("hello world", max_tokens=4, temperature=0.0).tokens == expected
    decoder.pop("num_key_value_heads")
    (copy / "genai_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError):
        edgellm.load(copy, n_ctx=64)
