"""Per-family memory facts against what llama.cpp allocates: sliding-window layers (Gemma 3), recurrent layers
without a KV cache (LFM2's short convolutions, Qwen3.5's DeltaNet), head_dim != hidden/heads and GQA. On tiny
random checkpoints whole-process RSS is noise, so the estimate's KV and state terms are compared with the
sizes llama.cpp logs for its caches; the real Gemma 3 270M is compared on whole-process peak RSS."""
from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edgellm.converters.gguf import convert_to_gguf
from edgellm.devices.memory import estimate_llama_cpp
from edgellm.planning import facts_from_gguf, facts_from_hf
from tests.converters.test_families import ROWS
from tests.fixtures.tiny import make_family_model

MiB = 2**20
CHILD = r"""
import sys
from edgellm.runtimes.llama_native import open_llama
path, n_ctx, swa_full = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
llm = open_llama(path, n_ctx=n_ctx, n_threads=1, verbose=True, swa_full=swa_full)
llm.close()
"""
_KV = re.compile(r"llama_kv_cache: size =\s+([\d.]+) MiB \(\s*(\d+) cells,\s+(\d+) layers")
_RS = re.compile(r"llama_memory_recurrent: size =\s+([\d.]+) MiB")


def llama_cpp_caches(gguf: Path, n_ctx: int, swa_full: bool) -> tuple[list[tuple[float, int, int]], float]:
    """([(KV MiB, cells, layers) per KV cache], recurrent-state MiB) as llama.cpp logs them when it allocates."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(gguf), str(n_ctx), "1" if swa_full else "0"],
                         capture_output=True, text=True, timeout=120, check=True)
    kv = [(float(m[1]), int(m[2]), int(m[3])) for m in _KV.finditer(out.stderr)]
    rs = sum(float(m[1]) for m in _RS.finditer(out.stderr))
    return kv, rs


@pytest.fixture(scope="module")
def tiny_ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("memfam")
    out = {}
    for name in ("gemma3", "lfm2", "qwen35", "qwen3"):
        folder = make_family_model(root / name / "model", ROWS[name], seed=1)
        out[name] = convert_to_gguf(folder, root / name / "f16", "F16").path
    return out


@pytest.mark.parametrize("swa_full", [True, False], ids=["swa-full", "swa-window"])
@pytest.mark.parametrize("name", ["gemma3", "lfm2", "qwen35", "qwen3"])
def test_kv_and_state_terms_match_what_llama_cpp_allocates(name: str, swa_full: bool,
                                                           tiny_ggufs: dict[str, Path]) -> None:
    """n_ctx 30000 (llama.cpp rounds to 30208 cells) makes the tiny caches measurable in the MiB it logs."""
    gguf = tiny_ggufs[name]
    facts = facts_from_gguf(gguf)
    n_ctx = 30000
    est = estimate_llama_cpp(facts, n_ctx, arch=platform.machine(), swa_full=swa_full)
    kv_caches, rs_mib = llama_cpp_caches(gguf, n_ctx, swa_full)
    logged = sum(mib for mib, _, _ in kv_caches)
    kv_layers = sum(layers for _, _, layers in kv_caches)
    assert kv_layers == sum(1 for i in range(facts.num_layers) if facts.kv_heads_of(i)), kv_caches
    assert abs(est.term("kv_cache") / MiB - logged) <= 0.01 * len(kv_caches) + 1e-9, (est.describe(), kv_caches)
    assert abs(est.term("recurrent_state") / MiB - rs_mib) <= 0.01, (est.describe(), rs_mib)
    if name == "gemma3":   # one global layer of four: with swa_full off the three sliding ones hold 768 cells
        cells = sorted(c for _, c, _ in kv_caches)
        assert cells == ([30208, 30208] if swa_full else [768, 30208])
    if name in ("lfm2", "qwen35"):
        assert facts.recurrent_state_bytes > 0 and kv_layers < facts.num_layers


@pytest.mark.parametrize("name", ["gemma3", "lfm2", "qwen35", "qwen3", "llama"])
def test_hf_folder_and_its_gguf_have_the_same_memory_facts(name: str, tmp_path: Path) -> None:
    """The facts a plan reads from config.json (family args) equal those read from the converted GGUF's metadata."""
    folder = make_family_model(tmp_path / "model", ROWS[name], seed=1)
    hf = facts_from_hf(folder)
    gg = facts_from_gguf(convert_to_gguf(folder, tmp_path / "f16", "F16").path)
    for n in range(hf.num_layers):
        assert hf.kv_heads_of(n) == gg.kv_heads_of(n) and hf.is_swa(n) == gg.is_swa(n), n
    assert (hf.head_dim, hf.recurrent_state_bytes, hf.tie_word_embeddings) == (
        gg.head_dim, gg.recurrent_state_bytes, gg.tie_word_embeddings)
    as_gguf = replace(hf, tensors=hf.layout("F16"), source="gguf")
    assert estimate_llama_cpp(as_gguf, 4096).term("kv_cache") == estimate_llama_cpp(gg, 4096).term("kv_cache")


@pytest.mark.slow
@pytest.mark.parametrize("n_ctx", [2048, 8192])
def test_gemma3_270m_estimate_within_15_percent_of_peak_rss(n_ctx: int) -> None:
    """A real sliding-window model (15 of 18 layers slide over 512 tokens and, with edgellm's swa_full=False,
    hold window + batch cells), 1 KV head of 256 dims, tied 262k-entry embeddings."""
    from tests.devices.test_memory_real import PROMPT_TOKENS, measure_peak_rss
    from tests.fixtures.gemma3 import gemma3_gguf

    pytest.importorskip("llama_cpp")
    from edgellm.runtimes.llama_native import kernel_policy

    path = gemma3_gguf()
    facts = facts_from_gguf(path)
    est = estimate_llama_cpp(facts, n_ctx, prompt_tokens=PROMPT_TOKENS, arch=platform.machine(),
                             extra_bufts=kernel_policy(path).use_extra_bufts)
    measured = measure_peak_rss(path, n_ctx)
    error = est.total_bytes / measured - 1
    print(f"\nGemma 3 270M Q4_K_M n_ctx={n_ctx}: estimate {est.total_bytes / MiB:.1f} MiB, measured "
          f"{measured / MiB:.1f} MiB, error {error:+.1%}  [{est.describe()}]")
    assert abs(error) <= 0.15
    assert facts.head_dim == 256 and facts.num_kv_heads == 1 and facts.tie_word_embeddings
    print(json.dumps({"n_ctx": n_ctx, "estimate": est.total_bytes, "measured": measured}))
