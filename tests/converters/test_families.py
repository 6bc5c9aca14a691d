"""Conformance table: per family, a tiny random checkpoint shaped like the real family's (written by the test
from the family's own tensor table), converted to GGUF F32 and ONNX fp32. llama.cpp (an independent
implementation of every family), onnxruntime, our numpy reference and an independent float64 rewrite of the HF
modelling math (tests/fixtures/reference_hf.py) must agree: same top-1 everywhere, max |error| below 1e-3 of
the logit spread. Adding a family = its module under converters/families/ + one row here (+ its HF math in
reference_hf.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgellm.converters.architectures import all_families, get_family
from edgellm.converters.families.weights import reference_logits
from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_reading import open_gguf
from edgellm.converters.gguf_to_hf import gguf_to_hf
from edgellm.converters.hf import read_hf_model
from edgellm.converters.onnx import convert_to_onnx
from tests.fixtures.reference_hf import hf_logits
from tests.fixtures.reference_qwen35 import qwen35_hf_logits
from tests.fixtures.tiny import make_family_model

BASE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 384, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}

# family name -> config.json of its tiny checkpoint (keys as the real family's config.json spells them)
ROWS: dict[str, dict] = {
    "llama": {**BASE, "architectures": ["LlamaForCausalLM"], "model_type": "llama", "tie_word_embeddings": False,
              "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8}},
    "mistral": {**BASE, "architectures": ["MistralForCausalLM"], "model_type": "mistral", "tie_word_embeddings": False},
    "qwen2": {**BASE, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "tie_word_embeddings": True,
              "rope_theta": 1000000.0},
    "qwen3": {**BASE, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "tie_word_embeddings": True,
              "head_dim": 32, "rope_theta": 1000000.0},    # heads*head_dim (128) != hidden (64), as in Qwen3
    "gemma2": {**BASE, "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "num_hidden_layers": 3,
               "head_dim": 32, "query_pre_attn_scalar": 24, "sliding_window": 5, "attn_logit_softcapping": 2.0,
               "final_logit_softcapping": 3.0, "hidden_activation": "gelu_pytorch_tanh"},
    "gemma3": {**BASE, "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "num_hidden_layers": 4,
               "num_key_value_heads": 1, "head_dim": 32, "query_pre_attn_scalar": 24, "sliding_window": 5,
               "sliding_window_pattern": 3, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
               "rope_scaling": {"rope_type": "linear", "factor": 2.0}, "hidden_activation": "gelu_pytorch_tanh",
               "final_logit_softcapping": None, "attn_logit_softcapping": None},
    "smollm3": {**BASE, "architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3", "num_hidden_layers": 4,
                "tie_word_embeddings": True, "no_rope_layers": [1, 1, 1, 0], "no_rope_layer_interval": 4},
    "granite": {**BASE, "architectures": ["GraniteForCausalLM"], "model_type": "granite", "tie_word_embeddings": True,
                "embedding_multiplier": 12.0, "attention_multiplier": 0.2, "residual_multiplier": 0.22,
                "logits_scaling": 8.0},
    "olmo2": {**BASE, "architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2", "tie_word_embeddings": False,
              "rope_theta": 500000.0},
    # Phi-4-mini's shape: fused projections, 3/4 of each 64-wide head rotated (48 dims), LongRoPE with an
    # original context of 16: llama.cpp (n_ctx 64) and HF/ONNX (20 tokens) both use the long factors
    "phi3": {**BASE, "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "tie_word_embeddings": True,
             "hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
             "partial_rotary_factor": 0.75, "original_max_position_embeddings": 16, "sliding_window": None,
             "rope_scaling": {"type": "longrope", "long_factor": [1.0 + 0.3 * i for i in range(24)],
                              "short_factor": [1.0 + 0.02 * i for i in range(24)]}},
    # LFM2's shape: short-convolution layers around an attention layer (GGUF only)
    "lfm2": {**BASE, "architectures": ["Lfm2ForCausalLM"], "model_type": "lfm2", "num_hidden_layers": 4,
             "layer_types": ["conv", "conv", "full_attention", "conv"], "conv_L_cache": 3, "norm_eps": 1e-5,
             "block_ff_dim": 128, "block_auto_adjust_ff_dim": False, "conv_bias": False,
             "tie_word_embeddings": True, "rope_theta": 1000000.0},
    # EXAONE 4.0 1.2B's shape: global attention only, llama3 RoPE scaling
    "exaone4": {**BASE, "architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4", "num_hidden_layers": 3,
                "tie_word_embeddings": True, "sliding_window": None, "rope_theta": 1000000.0,
                "rope_scaling": {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8}},
    # Qwen3.5's shape: Gated DeltaNet layers around full-attention ones, twice as many value heads as key heads
    # (llama.cpp tiles them), gated q_proj, partial interleaved M-RoPE (GGUF only)
    "qwen35": {**{k: v for k, v in BASE.items() if k != "rope_theta"}, "architectures": ["Qwen3_5ForCausalLM"], "model_type": "qwen3_5_text", "num_hidden_layers": 4,
               "head_dim": 32, "tie_word_embeddings": True, "full_attention_interval": 2,
               "layer_types": ["linear_attention", "full_attention", "linear_attention", "full_attention"],
               "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 16,
               "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4, "attn_output_gate": True,
               "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                                   "mrope_section": [2, 1, 1], "mrope_interleaved": True}},
}
ONNX_ROWS = [n for n, cfg in ROWS.items() if get_family(cfg["architectures"][0]).onnx_refusal is None]
IDS = [5, 17, 33, 2, 100, 7, 250, 9, 11, 12, 300, 42, 64, 65, 66, 200, 201, 3, 4, 380]   # longer than the windows


def test_every_registered_family_has_a_row() -> None:
    assert set(ROWS) == {f.name for f in all_families()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    # folders named "model": llama.cpp keys some vocabulary quirks on general.name (e.g. "phi3")
    return {name: make_family_model(root / name / "model", cfg, seed=7) for name, cfg in ROWS.items()}


def llama_cpp_logits(gguf_path: Path, ids: list[int], n_ctx: int = 64, type_k: int = 0, type_v: int = 0
                     ) -> np.ndarray:
    """Teacher-forced logits from llama.cpp itself, float32 KV cache (type 0), no flash attention."""
    from edgellm.runtimes.llama_native import open_llama  # the host's kernel policy, as edgellm.load

    llm = open_llama(gguf_path, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=1,
                type_k=type_k, type_v=type_v, flash_attn=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()


def ort_logits(onnx_path: Path, ids: list[int], layers: int, kv: int, hd: int) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    s = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    feed = {"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), np.int64),
            "position_ids": np.arange(len(ids))[None]}
    for i in range(layers):
        for k in ("key", "value"):
            feed[f"past_key_values.{i}.{k}"] = np.zeros((1, kv, 0, hd), np.float32)
    return s.run(["logits"], feed)[0][0].astype(np.float64)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, max |a - b| / spread of a)."""
    return float((a.argmax(-1) == b.argmax(-1)).mean()), float(np.abs(a - b).max() / (a.max() - a.min()))


@pytest.mark.parametrize("name", list(ROWS))
def test_llama_cpp_and_onnxruntime_agree(name: str, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    folder = checkpoints[name]
    with read_hf_model(folder) as m:
        a = get_family(m.config.architecture).parse(m.config)
    gguf = convert_to_gguf(folder, tmp_path / "gguf", "F32")
    ref = llama_cpp_logits(gguf.path, IDS)
    results, hf = {}, HF_MATH.get(name, hf_logits)(folder, IDS)
    if name not in ONNX_ROWS:   # refused with the GGUF route named
        from edgellm.errors import ConversionError

        with pytest.raises(ConversionError, match="GGUF"):
            convert_to_onnx(folder, tmp_path / "onnx", "fp32")
    for fused in ((True, False) if name in ONNX_ROWS else ()):
        onnx = convert_to_onnx(folder, tmp_path / f"onnx-{fused}", "fp32", fused=fused)
        got = ort_logits(onnx.path, IDS, a.layers, a.kv_heads, a.head_dim)
        results["fused" if fused else "standard"] = agreement(ref, got)
        # onnxruntime computes in float32 what the float64 HF math does, far inside llama.cpp's own error
        # (ggml's GELU goes through an fp16 table: Gemma's llama.cpp error is ~1e-4, ours ~1e-6)
        assert agreement(hf, got)[1] < 2e-5, f"{name} fused={fused} vs HF math: {agreement(hf, got)[1]:.2e}"
    results["numpy"] = agreement(ref, reference_logits(folder, IDS).astype(np.float64))
    results["hf-math"] = agreement(ref, hf)     # independent: catches transforms both converters share
    print(f"\n{name}: " + ", ".join(f"{k} top-1 {t:.3f} err/spread {e:.2e}" for k, (t, e) in results.items()))
    for kind, (top1, err) in results.items():
        assert top1 == 1.0, f"{name} {kind}: top-1 agreement {top1:.3f}"
        assert err < 1e-3, f"{name} {kind}: max error / spread {err:.2e}"


@pytest.mark.parametrize("name", list(ROWS))
def test_gguf_round_trip_rebuilds_an_equivalent_folder(name: str, checkpoints: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """HF -> GGUF F32 -> HF: same tensor names, and the rebuilt folder computes the same logits (weights may
    differ where a transform folds a scale into them). RoPE factor tensors (llama3, LongRoPE) are refused."""
    from edgellm.errors import UnsupportedArchitectureError

    folder = checkpoints[name]
    gguf = convert_to_gguf(folder, tmp_path / "gguf", "F32")
    if any(t.name.startswith(("rope_freqs", "rope_factors")) for t in open_gguf(gguf.path).tensors):
        with pytest.raises(UnsupportedArchitectureError, match="RoPE frequency factors"):
            gguf_to_hf(gguf.path, tmp_path / "back", dtype="F32")
        return
    back = gguf_to_hf(gguf.path, tmp_path / "back", dtype="F32")
    with read_hf_model(folder) as x, read_hf_model(back) as y:
        assert set(x.tensor_infos()) == set(y.tensor_infos())
        assert get_family(y.config.architecture).name == name or name == "mistral"
    want, got = reference_logits(folder, IDS), reference_logits(back, IDS)
    assert np.abs(want - got).max() < 1e-4 * (want.max() - want.min())
    names = {t.name for t in open_gguf(gguf.path).tensors}
    assert all(n.startswith(("blk.", "token_embd", "output", "rope_freqs")) for n in names)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "standard"])
@pytest.mark.parametrize("name", ["gemma3", "gemma2", "qwen3", "phi3", "smollm3"])
def test_kv_cache_decode_matches_the_full_pass(name: str, fused: bool, checkpoints: dict[str, Path],
                                               tmp_path: Path) -> None:
    """Prefill 6 tokens, then decode one token at a time through the KV cache, past the sliding window: each
    step's logits equal the full teacher-forced pass at that position."""
    import onnxruntime as ort

    folder = checkpoints[name]
    if name == "phi3":   # LongRoPE switches factors past 16 tokens (as HF does): stay on the short ones
        folder = make_family_model(tmp_path / "phi" / "model", {**ROWS[name], "original_max_position_embeddings": 64})
    with read_hf_model(folder) as m:
        a = get_family(m.config.architecture).parse(m.config)
    onnx = convert_to_onnx(folder, tmp_path / "onnx", "fp32", fused=fused)
    full = ort_logits(onnx.path, IDS, a.layers, a.kv_heads, a.head_dim)
    s = ort.InferenceSession(str(onnx.path), providers=["CPUExecutionProvider"])
    past = {f"past_key_values.{i}.{k}": np.zeros((1, a.kv_heads, 0, a.head_dim), np.float32)
            for i in range(a.layers) for k in ("key", "value")}
    outputs = ["logits"] + [f"present.{i}.{k}" for i in range(a.layers) for k in ("key", "value")]
    steps = [IDS[:6]] + [[t] for t in IDS[6:]]
    done = 0
    for chunk in steps:
        feed = {"input_ids": np.array([chunk]), "attention_mask": np.ones((1, done + len(chunk)), np.int64),
                "position_ids": np.arange(done, done + len(chunk))[None], **past}
        out = s.run(outputs, feed)
        past = {k.replace("present", "past_key_values"): v for k, v in zip(outputs[1:], out[1:])}
        done += len(chunk)
        step = out[0][0].astype(np.float64)
        err = np.abs(step - full[done - len(chunk):done]).max() / (full.max() - full.min())
        assert err < 1e-5, f"{name} at position {done}: {err:.2e}"


@pytest.mark.parametrize("name", ["qwen3", "gemma2", "gemma3"])
def test_gptq_calibration_runs_the_family_block(name: str, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The calibrated int4 recipe runs the family's block in numpy (q/k norms, post norms, GELU, windows): its
    logits are closer to fp32 than round-to-nearest's with the same bytes."""
    from tokenizers import Tokenizer

    from tests.fixtures.reference_llama import kl_divergence
    from tests.fixtures.texts import PROSE

    folder = checkpoints[name]
    with read_hf_model(folder) as m:
        a = get_family(m.config.architecture).parse(m.config)
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(PROSE).ids[:96]
    dims = (a.layers, a.kv_heads, a.head_dim)
    want = ort_logits(convert_to_onnx(folder, tmp_path / "fp32", "fp32").path, ids, *dims)
    kls = {}
    for q in ("int4-rtn", "int4"):
        res = convert_to_onnx(folder, tmp_path / q, q, lm_head="int8", embeddings="fp32", accuracy_level=1,
                              calibration_tokens=1024)
        kls[q] = float(kl_divergence(want, ort_logits(res.path, ids, *dims)).mean())
    assert kls["int4"] < 0.8 * kls["int4-rtn"], kls


def test_smollm3_nope_pattern_llama_cpp_cannot_express_is_refused_for_gguf_only(tmp_path: Path) -> None:
    from edgellm.errors import ConversionError

    cfg = {**ROWS["smollm3"], "no_rope_layers": [1, 0, 1, 1]}
    folder = make_family_model(tmp_path / "odd", cfg, seed=3)
    with pytest.raises(ConversionError, match="NoPE"):
        convert_to_gguf(folder, tmp_path / "gguf", "F32")
    assert not (tmp_path / "gguf").exists()
    onnx = convert_to_onnx(folder, tmp_path / "onnx", "fp32")
    got = ort_logits(onnx.path, IDS, 4, 2, 16)
    want = reference_logits(folder, IDS)
    assert np.abs(got - want).max() < 1e-5 * (want.max() - want.min()) * 100


def test_partial_rotary_narrower_than_group_query_attention_takes_is_rotated_outside_it(tmp_path: Path) -> None:
    """GroupQueryAttention rotates only rotary_dim/2 multiples of 8; 12 of 16 dims are rotated before it."""
    cfg = {**ROWS["phi3"], "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
           "rope_scaling": {"type": "longrope", "long_factor": [1.0, 1.5, 2.0, 3.0, 5.0, 8.0],
                            "short_factor": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]}}
    folder = make_family_model(tmp_path / "narrow" / "model", cfg, seed=5)
    ref = llama_cpp_logits(convert_to_gguf(folder, tmp_path / "gguf", "F32").path, IDS)
    for fused in (True, False):
        got = ort_logits(convert_to_onnx(folder, tmp_path / f"o{fused}", "fp32", fused=fused).path, IDS, 2, 2, 16)
        top1, err = agreement(ref, got)
        assert top1 == 1.0 and err < 1e-3, (fused, top1, err)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "standard"])
def test_longrope_uses_short_factors_up_to_the_original_context_and_long_ones_past_it(
        fused: bool, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    folder = checkpoints["phi3"]
    path = convert_to_onnx(folder, tmp_path / "onnx", "fp32", fused=fused).path
    short_ids = IDS[:12]                                  # 12 <= 16: short factors
    short = ort_logits(path, short_ids, 2, 1, 64)
    long = ort_logits(path, IDS, 2, 1, 64)[:12]          # 20 > 16: long factors for every position
    for got, ids in ((short, short_ids), (long, IDS)):
        want = reference_logits(folder, ids)[:12]
        assert np.abs(got - want).max() < 1e-5 * (want.max() - want.min()) * 10
    assert np.abs(short - long).max() > 1e-2 * (short.max() - short.min())   # the factors really differ


@pytest.mark.parametrize("name", list(ROWS))
def test_gguf_names_are_llama_cpp_names_for_the_arch(name: str) -> None:
    """Every GGUF tensor a family declares is one gguf-py lists for that llama.cpp architecture."""
    import gguf
    from edgellm.converters.hf import parse_config

    family = get_family(ROWS[name]["architectures"][0])
    args = family.parse(parse_config(ROWS[name]))
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == family.gguf_arch)
    allowed = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[arch]}
    for rule in family.rules(args):
        base = rule.gguf.replace("{i}", "{bid}")
        base = base if base in allowed else base.rsplit(".", 1)[0]      # ssm_a has no .weight
        assert base in allowed, f"{name}: {rule.gguf} is not a {family.gguf_arch} tensor in gguf-py"


def test_unknown_tensor_is_an_error(tmp_path: Path) -> None:
    from edgellm.converters.safetensors_io import write_safetensors
    from edgellm.errors import ConversionError

    folder = make_family_model(tmp_path / "m", ROWS["gemma3"], seed=2)
    extra = np.ones((4,), np.float32)
    write_safetensors(folder / "extra.safetensors", [("model.vision_tower.weight", "F32", extra.shape)],
                      [("model.vision_tower.weight", extra)])
    for convert in (lambda: convert_to_gguf(folder, tmp_path / "g", "F32"),
                    lambda: convert_to_onnx(folder, tmp_path / "o", "fp32")):
        with pytest.raises(ConversionError, match="vision_tower"):
            convert()


@pytest.mark.parametrize("name", ONNX_ROWS)
def test_quantized_onnx_computes_with_the_weights_it_stores(name: str, checkpoints: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """int4 and int8 decoder linears (fused and standard graphs): onnxruntime's logits equal the numpy
    reference run with the same block-quantized weights; fp16 stays within float16 rounding of fp32."""
    from edgellm.converters.quant import get_recipe, quantize_blocks

    folder = checkpoints[name]
    with read_hf_model(folder) as m:
        a = get_family(m.config.architecture).parse(m.config)
    dims = (a.layers, a.kv_heads, a.head_dim)
    for quant, fused in (("int4-rtn", True), ("int8", False)):
        recipe = get_recipe(quant)
        want = reference_logits(folder, IDS, quantize=lambda n, w, h: quantize_blocks(w, recipe.spec_for_linear(n), n))
        path = convert_to_onnx(folder, tmp_path / quant, quant, fused=fused, lm_head="fp32", embeddings="fp32",
                               accuracy_level=1).path
        top1, err = agreement(want, ort_logits(path, IDS, *dims))
        assert top1 == 1.0 and err < 1e-4, (quant, top1, err)
    fp32 = ort_logits(convert_to_onnx(folder, tmp_path / "fp32", "fp32").path, IDS, *dims)
    top1, err = agreement(fp32, ort_logits(convert_to_onnx(folder, tmp_path / "fp16", "fp16").path, IDS, *dims))
    assert top1 == 1.0 and err < 1e-2, ("fp16", top1, err)


def test_exaone4_hybrid_layers_follow_the_config_in_onnx_and_are_refused_for_gguf(tmp_path: Path) -> None:
    """The 32B's hybrid shape (sliding layers with RoPE, global layers without) in a 4-layer model: onnxruntime
    follows the HF math; llama.cpp would ignore the windows at this depth, so the GGUF is refused."""
    from edgellm.errors import ConversionError

    cfg = {**ROWS["exaone4"], "num_hidden_layers": 4, "sliding_window": 5, "rope_scaling": None,
           "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]}
    folder = make_family_model(tmp_path / "hybrid" / "model", cfg, seed=4)
    with pytest.raises(ConversionError, match="64-layer"):
        convert_to_gguf(folder, tmp_path / "gguf", "F32")
    want = hf_logits(folder, IDS)
    for fused in (True, False):
        got = ort_logits(convert_to_onnx(folder, tmp_path / f"o{fused}", "fp32", fused=fused).path, IDS, 4, 2, 16)
        top1, err = agreement(want, got)
        assert top1 == 1.0 and err < 2e-5, (fused, top1, err)


def test_gemma3_nested_rope_parameters_read_like_the_classic_keys() -> None:
    """transformers >= 4.56 writes rope_parameters per attention kind; both spellings give the same args."""
    from edgellm.converters.hf import parse_config

    classic = ROWS["gemma3"]
    nested = {k: v for k, v in classic.items() if k not in ("rope_theta", "rope_local_base_freq", "rope_scaling")}
    nested["rope_parameters"] = {"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
                                 "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
    family = get_family("Gemma3ForCausalLM")
    a, b = family.parse(parse_config(classic)), family.parse(parse_config(nested))
    assert (a.rope_theta, a.rope_local_theta, a.rope_scaling["factor"]) == (b.rope_theta, b.rope_local_theta,
                                                                            b.rope_scaling["factor"])
    assert a.swa_layers == b.swa_layers == (True, True, False, True)


def test_partial_rotary_survives_the_gguf_round_trip(tmp_path: Path) -> None:
    """rope.dimension_count (48 of 64 dims rotated) is not the head size: the rebuilt folder keeps head_dim 64
    and partial_rotary_factor 0.75, and computes the same logits."""
    import json

    folder = make_family_model(tmp_path / "phi" / "model", {**ROWS["phi3"], "rope_scaling": None}, seed=3)
    back = gguf_to_hf(convert_to_gguf(folder, tmp_path / "g", "F32").path, tmp_path / "back", dtype="F32")
    cfg = json.loads((back / "config.json").read_text())
    assert (cfg["head_dim"], cfg["partial_rotary_factor"]) == (64, 0.75)
    want, got = reference_logits(folder, IDS), reference_logits(back, IDS)
    assert np.abs(want - got).max() < 1e-5 * (want.max() - want.min())


K_DIMS = {"hidden_size": 256, "intermediate_size": 512, "block_ff_dim": 512}   # rows divisible by 256: K-quants apply


@pytest.mark.parametrize("name", list(ROWS))
def test_quantized_gguf_runs_in_llama_cpp(name: str, tmp_path: Path) -> None:
    """Q8_0 (written by edgellm) and Q4_K_M (llama.cpp's quantizer) of every family load and compute in
    llama.cpp; Q8_0 stays near F32. Tensors a llama.cpp op needs in float (LFM2's conv kernel) stay F32."""
    import gguf as gg

    cfg = {**ROWS[name], **K_DIMS}
    if "head_dim" in cfg:
        cfg["head_dim"] = 64
    if name == "phi3":
        cfg["rope_scaling"] = None
    if name == "qwen35":     # 16 of 64 dims rotated
        cfg["rope_parameters"] = {**cfg["rope_parameters"], "mrope_section": [4, 2, 2]}
    folder = make_family_model(tmp_path / "m" / "model", cfg, seed=3)
    ref = llama_cpp_logits(convert_to_gguf(folder, tmp_path / "f32", "F32").path, IDS)
    for quant, max_err in (("Q8_0", 0.15), ("Q4_K_M", 1.0)):
        res = convert_to_gguf(folder, tmp_path / quant, quant)
        got = llama_cpp_logits(res.path, IDS)
        assert np.isfinite(got).all() and agreement(ref, got)[1] < max_err, (quant, agreement(ref, got))
        types = {t.name: t.tensor_type.name for t in gg.GGUFReader(res.path).tensors}
        assert all(t == "F32" for n, t in types.items() if "shortconv.conv" in n or "ssm_conv1d" in n)


@pytest.mark.parametrize("name", list(ROWS))
def test_every_family_loads_and_generates_through_edgellm(name: str, checkpoints: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """The whole path a user takes: convert, then edgellm.load (validation, plan, runtime) and generate, in
    both formats where the family has both."""
    import edgellm

    folder = checkpoints[name]
    artifacts = [convert_to_gguf(folder, tmp_path / "gguf", "Q8_0").path.parent]
    if name in ONNX_ROWS:
        artifacts.append(convert_to_onnx(folder, tmp_path / "onnx", "int8").path.parent)
    for art in artifacts:
        with edgellm.load(art, n_ctx=64) as model:
            out = model.generate("hello world", max_tokens=4, temperature=0.0)
            assert 1 <= out.metrics.generated_tokens <= 4
            logits = model.logits(model.tokenize("the quick brown fox"))
            assert logits.shape[-1] == 384 and np.isfinite(logits).all()


def test_the_table_catches_a_transform_both_converters_would_share(checkpoints: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    """A Gemma 3 family that forgets the (1 + w) offset of one norm builds a graph that still runs; the
    independent HF math sees it (llama.cpp alone could not: its GGUF would carry the same mistake)."""
    from dataclasses import replace

    from edgellm.converters.families.gemma3 import GEMMA3
    from edgellm.converters.onnx_graph import GraphOptions, build_decoder
    from edgellm.converters.onnx_ops import GraphWriter
    from edgellm.converters.quant import get_recipe

    def broken_rules(a: object) -> tuple:
        return tuple(replace(r, to_canon=None, from_canon=None) if r.gguf == "blk.{i}.attn_norm.weight" else r
                     for r in GEMMA3.tensors(a))

    folder = checkpoints["gemma3"]
    writer = GraphWriter(tmp_path / "model.onnx.data", "model.onnx.data")
    with read_hf_model(folder) as m:
        build_decoder(m, replace(GEMMA3, tensors=broken_rules), writer, GraphOptions(get_recipe("fp32"),
                                                                                     max_positions=512))
    writer.finish()
    (tmp_path / "model.onnx").write_bytes(writer.model("broken", True).SerializeToString())
    got = ort_logits(tmp_path / "model.onnx", IDS, 4, 1, 32)
    assert np.isfinite(got).all()
    err = agreement(hf_logits(folder, IDS), got)[1]
    assert err > 1e-2, f"a missing norm offset went unnoticed ({err:.1e})"   # correct: ~1e-6


# Families whose HF math is not in tests/fixtures/reference_hf.py
HF_MATH = {"qwen35": qwen35_hf_logits}
