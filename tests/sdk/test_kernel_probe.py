"""The kernel probe on real llama.cpp: the real probe on this CPU, and a child standing in for a defective CPU
(a real SIGSEGV, real wrong numbers) to show the fallback and that the test process survives it."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

import edgellm
from edgellm.errors import BackendUnavailableError
from edgellm.kernel_probe import FAMILIES, run_probe
from edgellm.runtimes.llama_native import (build_info, host_isa, kernel_policy, matching_defects, read_verdicts)

FAULTY_CHILD = [sys.executable, str(Path(__file__).with_name("faulty_probe_child.py"))]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELLM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_q4k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model holding Q4_K tensors (the probe's own tiny Llama, written by edgellm's converter)."""
    from edgellm.kernel_probe import build_probe_models

    return build_probe_models(tmp_path_factory.mktemp("q4k"), ["Q4_K"])["Q4_K"][0]


def test_real_probe_on_this_cpu_and_no_switch_without_a_defect(tiny_q4k: Path) -> None:
    report = run_probe()
    assert [v.family for v in report.verdicts] == list(FAMILIES)
    assert read_verdicts() is not None and report.cache_path.is_file()
    for v in report.verdicts:  # the safe path is llama.cpp's plain one: close to the F32 twin everywhere
        assert v.safe == "ok", v
        assert v.rel_error["safe"] < 0.05, v
    defects = matching_defects(host_isa(), build_info().features)
    policy = kernel_policy(tiny_q4k)
    if not defects and not report.bad:  # e.g. AMD EPYC, AVX2-only Intel: llama.cpp's defaults, untouched
        assert policy.use_extra_bufts and not policy.reasons
    else:  # e.g. an AMX Xeon: Q4_K models switch exactly when a defect or a bad verdict covers Q4_K
        affected = {v.family for v in report.bad} | {t for d in defects for t in d.types}
        assert policy.safe == ("Q4_K" in affected)


def test_crashing_and_wrong_kernels_fall_back_and_warn_once(tiny_q4k: Path, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        report = run_probe(child=FAULTY_CHILD, families=["Q4_0", "Q8_0", "Q4_K"])
    got = {v.family: v for v in report.verdicts}
    assert got["Q4_K"].default == "crash:SIGSEGV" and got["Q4_K"].safe == "ok"
    assert got["Q8_0"].default.startswith("wrong:") and got["Q8_0"].safe == "ok"
    assert got["Q8_0"].rel_error["default"] > 1.0 > 0.05 > got["Q8_0"].rel_error["safe"]
    assert not got["Q4_0"].default_bad  # the child that crashed on Q4_K was replaced; Q4_0 still judged
    warnings = [r.getMessage() for r in caplog.records if "kernel probe" in r.getMessage()]
    assert len(warnings) == 2 and any("Q4_K crash:SIGSEGV" in w for w in warnings)
    assert "| Q4_K | crash:SIGSEGV | ok |" in report.table()

    policy = kernel_policy(tiny_q4k)  # read back from the cache, as every later load does
    assert policy.safe and "Q4_K crash:SIGSEGV" in policy.reasons[0]
    with edgellm.load(tiny_q4k, n_ctx=64) as model:  # verdicts cached: the load does not probe again
        result = model.generate([5, 17, 99, 3], max_tokens=4, temperature=0.0)
    assert len(result.tokens) == 4
    assert "safe kernels" in result.metrics.backend
    plan = edgellm.plan(tiny_q4k, device="cpu")
    assert any("extra buffer types off" in r and "Q4_K" in r for r in plan.reasons)


def test_family_bad_under_both_configurations_is_refused(tiny_q4k: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTY_PROBE_BOTH", "Q4_K")
    report = run_probe(child=FAULTY_CHILD, families=["Q4_K"])
    assert report.verdicts[0].default_bad and report.verdicts[0].safe_bad
    with pytest.raises(BackendUnavailableError, match="Q4_K"):
        edgellm.load(tiny_q4k, n_ctx=64)
