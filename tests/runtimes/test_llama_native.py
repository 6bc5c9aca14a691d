"""The one door to llama.cpp: known-defect matching, the policy decision, and the safe switch on real llama.cpp."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.errors import BackendUnavailableError
from edgellm.runtimes.llama_native import (KNOWN_DEFECTS, KernelPolicy, Verdict, decide_policy, gguf_tensor_types,
                                           matching_defects, open_llama, parse_system_info)

AMX_BUILD = parse_system_info("CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | REPACK = 1 |")
PLAIN_BUILD = parse_system_info("CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | REPACK = 1 | ")


def test_system_info_parses_llama_cpp_feature_string() -> None:
    assert AMX_BUILD["AMX_INT8"] == "1" and AMX_BUILD["AVX2"] == "1" and "AMX_INT8" not in PLAIN_BUILD


def test_amx_defect_needs_both_the_cpu_flag_and_an_amx_build() -> None:
    sapphire = {"avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"}
    assert [d.name for d in matching_defects(sapphire, AMX_BUILD)] == ["amx-mul-mat-segfault"]
    assert matching_defects(sapphire, PLAIN_BUILD) == []            # portable build without the AMX variant
    assert matching_defects({"avx2", "avx512f"}, AMX_BUILD) == []   # AMD EPYC / older Xeon
    assert matching_defects({"neon", "dotprod"}, {}) == []


def test_policy_switches_only_models_holding_an_affected_type() -> None:
    amx = [d for d in KNOWN_DEFECTS if d.name == "amx-mul-mat-segfault"]
    q8 = decide_policy({"F32", "Q8_0"}, amx, None)
    assert q8.safe and "Q8_0" in q8.reasons[0] and "AMX" in q8.describe()
    q4km = decide_policy({"F32", "Q5_0", "Q4_K", "Q6_K"}, amx, None)
    assert q4km.safe and "Q4_K, Q6_K" in q4km.reasons[0]
    assert not decide_policy({"F32", "F16"}, amx, None).safe       # F16/F32 run on AMX hosts
    assert decide_policy({"F32", "Q8_0"}, [], None) == KernelPolicy()  # no defect: llama.cpp's defaults


def test_policy_follows_probe_verdicts() -> None:
    verdicts = {"Q4_K": Verdict("Q4_K", "crash:SIGSEGV", "ok"), "Q8_0": Verdict("Q8_0", "ok", "ok"),
                "IQ4_NL": Verdict("IQ4_NL", "wrong:3.1", "wrong:2.9"), "Q2_K": Verdict("Q2_K", "error:x", "error:x")}
    assert decide_policy({"Q8_0", "F32"}, [], verdicts) == KernelPolicy()
    crash = decide_policy({"Q4_K", "F32"}, [], verdicts)
    assert crash.safe and "crash:SIGSEGV" in crash.reasons[0] and not crash.refused
    both = decide_policy({"IQ4_NL"}, [], verdicts)
    assert both.refused and "IQ4_NL" in both.refused[0]
    assert decide_policy({"Q2_K"}, [], verdicts) == KernelPolicy()  # a refusal by exception is not a danger


@pytest.fixture(scope="module")
def probe_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    from edgellm.kernel_probe import build_probe_models

    return build_probe_models(tmp_path_factory.mktemp("probe-models"), ["IQ4_NL", "Q8_0"])


def test_safe_switch_turns_extra_buffers_off_and_restores_the_default(probe_models) -> None:  # noqa: ANN001
    import llama_cpp

    # IQ4_NL: repacked on AVX2/AVX-512/NEON, no AMX kernel, so opening it with the defaults is safe on every CPU
    path = probe_models["IQ4_NL"][0]
    assert gguf_tensor_types(path) >= {"IQ4_NL"}
    safe = open_llama(path, policy=KernelPolicy(use_extra_bufts=False, reasons=("test",)), n_ctx=64)
    default = open_llama(path, policy=KernelPolicy(), n_ctx=64)
    try:
        assert safe.model_params.use_extra_bufts is False
        assert default.model_params.use_extra_bufts is True
        assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True  # nothing leaks
        ids = [5, 17, 99, 3, 42, 7]
        safe.eval(ids)
        default.eval(ids)
        assert safe.n_tokens == default.n_tokens == len(ids)
    finally:
        safe.close()
        default.close()


def test_refused_family_is_a_typed_error_not_a_native_crash(probe_models) -> None:  # noqa: ANN001
    policy = decide_policy({"Q8_0"}, [], {"Q8_0": Verdict("Q8_0", "crash:SIGSEGV", "crash:SIGBUS")})
    with pytest.raises(BackendUnavailableError, match="Q8_0"):
        open_llama(probe_models["Q8_0"][0], policy=policy, n_ctx=64)
