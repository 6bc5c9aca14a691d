"""Memory estimate vs measured peak RSS (VmHWM) of a fresh process loading SmolLM2: GGUF with llama-cpp-python,
ONNX int4 with edgellm's onnxruntime runtime."""
import json
import os
import subprocess
import sys

import pytest

from edgellm.devices.memory import estimate_llama_cpp, estimate_onnxruntime
from edgellm.planning import facts_from_gguf

PROMPT_TOKENS = 200
CHILD = r"""
import json, sys
from edgellm.runtimes.llama_native import open_llama  # this host's kernel policy, as edgellm.load applies it
from edgellm.runtimes.options import LlamaCppOptions   # and the runtime's default options (swa_full=False)
path, n_ctx, n_prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = open_llama(path, n_ctx=n_ctx, n_threads=2, **LlamaCppOptions().llama_kwargs())
tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 200)[:n_prompt]
llm.eval(tokens)
llm.eval([tokens[-1]])
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"vmhwm": int(status["VmHWM"].split()[0]) * 1024}))
"""


def measure_peak_rss(path, n_ctx: int) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(n_ctx), str(PROMPT_TOKENS)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["vmhwm"]


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M"])
@pytest.mark.parametrize("n_ctx", [512, 2048, 8192])
def test_gguf_estimate_within_15_percent_of_peak_rss(smol_gguf, quant, n_ctx):
    pytest.importorskip("llama_cpp")
    path = smol_gguf(quant)
    facts = facts_from_gguf(path)
    import platform

    from edgellm.runtimes.llama_native import kernel_policy

    # on a host with a kernel defect (AMX) the model opens with extra buffer types off: no repacked copy
    extra = kernel_policy(path).use_extra_bufts
    est = estimate_llama_cpp(facts, n_ctx, prompt_tokens=PROMPT_TOKENS, arch=platform.machine(), extra_bufts=extra)
    measured = measure_peak_rss(path, n_ctx)
    error = (est.total_bytes - measured) / measured
    print(f"\n{quant} n_ctx={n_ctx}: estimate {est.total_bytes / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB,"
          f" error {error:+.1%}  [{est.describe()}]")
    assert abs(error) <= 0.15
    # the worst case (full micro-batch against a full context) is an upper bound of the measured run
    assert estimate_llama_cpp(facts, n_ctx, arch=platform.machine(), extra_bufts=extra).total_bytes >= measured * 0.98


ORT_CHILD = r"""
import json, sys
import edgellm
path, n_ctx, n_prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = edgellm.load(path, n_ctx=n_ctx, threads=2)  # device="auto", the default a plan is made for
ids = model.tokenize("The quick brown fox jumps over the lazy dog. " * (n_prompt // 5 + 10))[:n_prompt]
assert len(ids) == n_prompt, len(ids)
m = model.generate(ids, max_tokens=1, temperature=0).metrics  # one prefill pass of the whole prompt, then one token
# generate() resets the kernel's peak mark; the process peak (load included) is what metrics keep
from edgellm.metrics import process_peak_rss
print(json.dumps({"vmhwm": process_peak_rss(), "metrics": m.peak_rss_bytes}))
"""
# The prompt that fills the context is the worst case a plan budgets for (KV for the whole context, logits for
# every prompt position). A full prefill takes ~4 s at 512 and ~20 s at 2048 on 2 cores but ~110 s at 8192,
# so the 8192 case measures 3000 tokens by default (the estimate is linear in the prompt: tiled attention,
# no tokens x tokens buffer; checked once at 8150 tokens: estimate 2656 MiB, measured 2632 MiB, +0.9%).
# EDGELLM_ORT_FULL_CONTEXT=1 measures 8191 tokens instead.
LONG_PROMPT = {512: 511, 2048: 2047,
               8192: 8191 if os.environ.get("EDGELLM_ORT_FULL_CONTEXT") == "1" else 3000}


def measure_ort_peak_rss(artifact, n_ctx: int, n_prompt: int) -> int:
    out = subprocess.run([sys.executable, "-c", ORT_CHILD, str(artifact), str(n_ctx), str(n_prompt)],
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["vmhwm"]


@pytest.mark.slow
@pytest.mark.parametrize("n_ctx", [512, 2048, 8192])
def test_onnx_int4_estimate_within_15_percent_of_peak_rss(smollm2_onnx_int4, n_ctx):
    """Two workloads per context: the 200-token prompt of the GGUF test, and a long prompt (filling the
    context at 512 and 2048). The runtime sizes KV to prompt + max_tokens, so the peak follows the prompt, and
    the worst-case estimate (prompt_tokens=None: a prompt filling n_ctx) must bound both measurements."""
    pytest.importorskip("onnxruntime")
    from edgellm.planning import read_model_facts

    from edgellm.planning import resolve_device

    resolve_device("cpu")   # the bandwidth probe of a first load on a machine runs here, cached for the child
    facts = read_model_facts(smollm2_onnx_int4)
    weights = facts.file_bytes or 0
    worst = estimate_onnxruntime(facts, n_ctx, weights_bytes=weights)
    for n_prompt in (PROMPT_TOKENS, LONG_PROMPT[n_ctx]):
        est = estimate_onnxruntime(facts, n_ctx, weights_bytes=weights, prompt_tokens=n_prompt)
        measured = measure_ort_peak_rss(smollm2_onnx_int4, n_ctx, n_prompt)
        error = (est.total_bytes - measured) / measured
        print(f"\nONNX int4 n_ctx={n_ctx} prompt={n_prompt}: estimate {est.total_bytes / 2**20:.1f} MiB, "
              f"measured {measured / 2**20:.1f} MiB, error {error:+.1%}  [{est.describe()}]")
        assert abs(error) <= 0.15
        # the worst case bounds the measurement within the same +-15% goal: how far it sits from the measured
        # peak differs between CPUs (MLAS prepacks int4 blocks per ISA: AVX2, AVX-512 VNNI and AMX hosts
        # allocate different packed layouts and arenas; measured here -1..+6%, -2.7% on an AMX Xeon)
        assert worst.total_bytes >= measured * 0.85
    print(f"ONNX int4 n_ctx={n_ctx} worst case (prompt of {n_ctx - 1}): estimate "
          f"{worst.total_bytes / 2**20:.1f} MiB  [{worst.describe()}]")
