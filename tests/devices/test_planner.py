import pytest

from edgellm.devices.cuda import detect_cuda
from edgellm.devices.planner import Budgets, plan_model
from edgellm.devices.types import CUDAInventory, Device, ModelFacts, TensorFacts
from edgellm.errors import BudgetError, InsufficientMemoryError
from edgellm.planning import plan, resolve_device

from .test_detection import fake_nvml

GiB = 1 << 30


def llama_facts(layers=32, hidden=4096, ffn=11008, heads=32, kv=32, vocab=32000) -> ModelFacts:
    """An HF-style (BF16) llama: a 7B shape by default."""
    tensors = [TensorFacts("model.embed_tokens.weight", (vocab, hidden), "BF16"),
               TensorFacts("lm_head.weight", (vocab, hidden), "BF16"), TensorFacts("model.norm.weight", (hidden,), "BF16")]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [TensorFacts(p + "self_attn.q_proj.weight", (hidden, hidden), "BF16"),
                    TensorFacts(p + "self_attn.k_proj.weight", (kv * hidden // heads, hidden), "BF16"),
                    TensorFacts(p + "self_attn.v_proj.weight", (kv * hidden // heads, hidden), "BF16"),
                    TensorFacts(p + "self_attn.o_proj.weight", (hidden, hidden), "BF16"),
                    TensorFacts(p + "mlp.gate_proj.weight", (ffn, hidden), "BF16"),
                    TensorFacts(p + "mlp.up_proj.weight", (ffn, hidden), "BF16"),
                    TensorFacts(p + "mlp.down_proj.weight", (hidden, ffn), "BF16"),
                    TensorFacts(p + "input_layernorm.weight", (hidden,), "BF16")]
    return ModelFacts("LlamaForCausalLM", layers, hidden, ffn, heads, kv, hidden // heads, vocab, 4096,
                      tensors=tuple(tensors), source="hf")


def cpu_device(memory=16 * GiB, threads=8, bandwidth=50.0) -> Device:
    return Device("cpu", "cpu", threads, memory, ("avx2", "fma", "f16c"), "x86_64", bandwidth)


def simulated_cuda(free_gib: float) -> CUDAInventory:
    return detect_cuda(nvml=fake_nvml([("NVIDIA RTX A2000", int(free_gib * GiB) + GiB, int(free_gib * GiB), (8, 6))]),
                       ort_probe=lambda: (False, "no CUDA EP"), llama_probe=lambda: (True, ""))


def test_cpu_plan_picks_best_quant_that_fits_with_reasons():
    facts = llama_facts()
    roomy = plan_model(facts, cpu_device(memory=32 * GiB), model_name="7b")
    assert roomy.quant == "F16" and roomy.format == "gguf" and roomy.threads == 8
    tight = plan_model(facts, cpu_device(memory=7 * GiB), model_name="7b")
    assert tight.quant in ("Q5_K_M", "Q4_K_M") and tight.memory.host_bytes <= 7 * GiB
    assert any(r.startswith("quant ") and "bits/weight" in r for r in tight.reasons)
    assert any("rejected F16" in r for r in tight.reasons)
    # decode of a 7B model on 50 GB/s is bandwidth-bound: a few tokens/s
    assert 2 < tight.predicted_decode_tps < 20 and any("bandwidth-bound" in r for r in tight.reasons)


def test_budgets_quality_and_speed():
    facts = llama_facts()
    p = plan_model(facts, cpu_device(32 * GiB), Budgets(max_memory=5 * GiB, max_quality_loss=0.01))
    assert p.quant == "Q4_K_M" and p.quality_loss <= 0.01
    fast = plan_model(facts, cpu_device(32 * GiB), Budgets(min_tps=8.0))
    assert fast.predicted_decode_tps >= 8.0 and fast.quant != "F16"
    with pytest.raises(BudgetError, match="tokens/s"):
        plan_model(facts, cpu_device(32 * GiB), Budgets(min_tps=500.0))


def test_model_that_cannot_fit_is_refused_naming_required_and_available():
    with pytest.raises(InsufficientMemoryError) as exc:
        plan_model(llama_facts(), cpu_device(memory=2 * GiB), Budgets(n_ctx=2048), model_name="7b")
    msg = str(exc.value)
    assert "needs" in msg and "2.00 GiB is available" in msg and "Q2_K" in msg


def test_full_gpu_offload_simulated():
    device = resolve_device("cuda", cuda=simulated_cuda(free_gib=12), bandwidth_gbs=40.0)
    assert device.kind == "cuda" and device.gpu.name == "NVIDIA RTX A2000"
    p = plan_model(llama_facts(), device, Budgets(n_ctx=4096))
    assert p.provider == "CUDA" and p.n_gpu_layers == 33 and p.quant in ("Q8_0", "Q6_K")
    assert p.memory.device_bytes <= 12 * GiB * 0.9 and any("all 32 layers offloaded" in r for r in p.reasons)


def test_partial_gpu_offload_simulated():
    device = resolve_device("cuda:0", cuda=simulated_cuda(free_gib=3), bandwidth_gbs=40.0)
    p = plan_model(llama_facts(), device, Budgets(n_ctx=4096, max_quality_loss=0.01))
    assert p.provider == "CUDA" and 0 < p.n_gpu_layers < 32
    assert p.memory.device_bytes <= 3 * GiB * 0.9 and p.memory.term("weights", "host") > 0
    assert any("partial offload" in r for r in p.reasons)
    cpu_only = plan_model(llama_facts(), resolve_device("cpu", bandwidth_gbs=40.0), Budgets(n_ctx=4096, max_quality_loss=0.01))
    assert p.predicted_decode_tps > cpu_only.predicted_decode_tps


@pytest.mark.parametrize("inventory,needle", [
    (CUDAInventory(reason="NVML not available (pip install nvidia-ml-py)"), "NVML not available"),
    (detect_cuda(nvml=fake_nvml([("X", GiB, GiB, (8, 0))], fail_at="nvmlInit")), "version mismatch"),
    (detect_cuda(nvml=fake_nvml([])), "no NVIDIA GPU"),
])
def test_no_usable_gpu_falls_back_to_cpu_plan_with_reason_simulated(inventory, needle):
    device = resolve_device("cuda", cuda=inventory, bandwidth_gbs=20.0)
    assert device.kind == "cpu" and any(needle in r for r in device.reasons)
    p = plan_model(llama_facts(layers=4, hidden=512, ffn=1024, heads=8, kv=8), device)
    assert p.provider == "CPU" and p.n_gpu_layers == 0 and any(needle in r for r in p.reasons)


def test_gpu_without_runtime_support_falls_back_simulated():
    inv = detect_cuda(nvml=fake_nvml([("T4", 16 * GiB, 15 * GiB, (7, 5))]),
                      ort_probe=lambda: (False, "no CUDA EP"), llama_probe=lambda: (False, "built without GPU"))
    device = resolve_device("auto", cuda=inv, bandwidth_gbs=20.0)
    assert device.kind == "cpu" and any("built without GPU" in r for r in device.reasons)


def test_real_gguf_refused_on_profile_before_loading(smol_gguf):
    path = smol_gguf("Q8_0")
    with pytest.raises(InsufficientMemoryError) as exc:
        plan(path, device="profile:raspberry-pi-4-4gb", max_memory="200MiB", n_ctx=8192)
    assert "200.00 MiB is available" in str(exc.value) and "needs" in str(exc.value)
    ok = plan(path, device="profile:raspberry-pi-5", max_memory="2GiB")
    assert ok.quant == "Q8_0" and ok.threads == 4 and ok.memory.total_bytes < 2 * GiB
