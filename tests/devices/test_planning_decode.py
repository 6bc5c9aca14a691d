"""ONNX decode prediction: the bytes a decode step reads are the weights it touches (not 0), and the
prediction is printed next to a measured decode of SmolLM2 int4 (speed ratios are reported, not asserted:
shared CI machines make wall-clock speed a benchmark matter, see tests/benchmarks/)."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.devices.planner import QUANT_LADDER, decode_read_bytes
from edgellm.planning import plan, read_model_facts


@pytest.mark.slow
def test_onnx_int4_decode_reads_its_matmul_weights_and_is_compared_with_a_measured_decode(
        smollm2_onnx_int4: Path) -> None:
    pytest.importorskip("onnxruntime")
    import edgellm

    facts = read_model_facts(smollm2_onnx_int4)
    int4 = next(o for o in QUANT_LADDER if o.name == "int4")
    host, gpu = decode_read_bytes(facts, int4)
    # tied int4 export: the LM head (which the embedding gathers from) and every block's MatMulNBits are read
    assert gpu == 0 and 0.9 * (facts.file_bytes or 0) <= host <= (facts.file_bytes or 0)
    p = plan(smollm2_onnx_int4, device="cpu", n_ctx=512)
    assert p.predicted_decode_tps > 0 and not any(" 0 B read/token" in r for r in p.reasons)
    with edgellm.load(smollm2_onnx_int4, device="cpu", n_ctx=512, threads=p.threads) as model:
        model.generate("Warm up", max_tokens=4, temperature=0.0)
        m = model.generate("The history of the region", max_tokens=64, temperature=0.0).metrics
    assert m.generated_tokens == 64 and m.decode_tps
    cpu_normalized = m.generated_tokens / (m.cpu_s / max(1, p.threads))   # what an unshared machine would give
    print(f"\nSmolLM2 int4 decode: predicted {p.predicted_decode_tps:.1f} tok/s, measured {m.decode_tps:.1f} tok/s "
          f"(ratio {p.predicted_decode_tps / m.decode_tps:.2f}), CPU-time normalized {cpu_normalized:.1f} tok/s "
          f"(ratio {p.predicted_decode_tps / cpu_normalized:.2f}); {host / 2**20:.1f} MiB read/token")


@pytest.mark.slow
def test_decode_compute_counts_each_weight_once_whatever_the_format(smollm2_onnx_int4: Path,
                                                                    smollm2_artifact) -> None:  # noqa: ANN001
    """Issue 17: an ONNX artifact (no config.json: tie unknown) was planned with its embedding counted as a
    matmul twice, 3.00 instead of 2.47 GFLOP/token at 1B. The work of a decode step is the same model's whatever
    its format: the ONNX plan's GFLOP/token equals the GGUF plan's, and both name the per-layer cost."""
    from edgellm.devices.planner import matmul_params

    onnx_facts = read_model_facts(smollm2_onnx_int4)
    gguf_facts = read_model_facts(smollm2_artifact("Q8_0"))
    assert matmul_params(onnx_facts) == pytest.approx(matmul_params(gguf_facts), rel=0.01)
    assert matmul_params(onnx_facts) < onnx_facts.param_count   # the gathered table is not multiplied by
    for artifact in (smollm2_onnx_int4, smollm2_artifact("Q8_0")):
        p = plan(artifact, device="cpu", n_ctx=512)
        decode = next(r for r in p.reasons if r.startswith("decode ~"))
        assert ("0.27 GFLOP/token" in decode and "30 layers x per-layer cost" in decode) or "bandwidth-bound" in decode
