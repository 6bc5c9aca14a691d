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
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real models holding Q4_K and Q5_0 tensors (the probe's own tiny Llama, written by edgellm's converter)."""
    from edgellm.kernel_probe import build_probe_models

    built = build_probe_models(tmp_path_factory.mktemp("tiny"), ["Q4_K", "Q5_0"])
    return {fam: quantized for fam, (quantized, _) in built.items()}


@pytest.fixture(scope="module")
def tiny_q4k(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["Q4_K"]


@pytest.fixture(scope="module")
def tiny_q5(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["Q5_0"]


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


def test_crashing_and_wrong_kernels_fall_back_and_warn_once(tiny_q5: Path, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    # Q5_0, IQ4_NL and F16 have no AMX kernels: the same outcome on every CPU this suite runs on
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        report = run_probe(child=FAULTY_CHILD, families=["F16", "IQ4_NL", "Q5_0"])
    got = {v.family: v for v in report.verdicts}
    assert got["Q5_0"].default == "crash:SIGSEGV" and got["Q5_0"].safe == "ok"
    assert got["IQ4_NL"].default.startswith("wrong:") and got["IQ4_NL"].safe == "ok"
    assert got["IQ4_NL"].rel_error["default"] > 1.0 > 0.05 > got["IQ4_NL"].rel_error["safe"]
    assert not got["F16"].default_bad  # the child that crashed on Q5_0 was replaced; F16 still judged
    warnings = [r.getMessage() for r in caplog.records if "kernel probe" in r.getMessage()]
    assert len(warnings) == 2 and any("Q5_0 crash:SIGSEGV" in w for w in warnings)
    assert "| Q5_0 | crash:SIGSEGV | ok |" in report.table()

    policy = kernel_policy(tiny_q5)  # read back from the cache, as every later load does
    assert policy.safe and "Q5_0 crash:SIGSEGV" in policy.reasons[0]
    with edgellm.load(tiny_q5, n_ctx=64) as model:  # verdicts cached: the load does not probe again
        result = model.generate([5, 17, 99, 3], max_tokens=4, temperature=0.0)
    assert len(result.tokens) == 4
    assert "safe kernels" in result.metrics.backend
    plan = edgellm.plan(tiny_q5, device="cpu")
    assert any("extra buffer types off" in r and "Q5_0" in r for r in plan.reasons)


def test_family_bad_under_both_configurations_is_refused(tiny_q5: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTY_PROBE_BOTH", "Q5_0")
    report = run_probe(child=FAULTY_CHILD, families=["Q5_0"])
    assert report.verdicts[0].default_bad and report.verdicts[0].safe_bad
    with pytest.raises(BackendUnavailableError, match="Q5_0"):
        edgellm.load(tiny_q5, n_ctx=64)


def test_unwritable_cache_skips_the_probe_but_not_the_load(tiny_q5: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from edgellm import kernel_probe

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("EDGELLM_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(kernel_probe, "_GAVE_UP", [])
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        with edgellm.load(tiny_q5, n_ctx=64) as model:
            assert len(model.generate([5, 17], max_tokens=2, temperature=0.0).tokens) == 2
        with edgellm.load(tiny_q5, n_ctx=64):  # the second load does not try again
            pass
    skipped = [r.getMessage() for r in caplog.records if "probe skipped" in r.getMessage()]
    assert len(skipped) == 1 and "EDGELLM_CACHE_DIR" in skipped[0]
