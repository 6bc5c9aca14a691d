"""Energy meters: RAPL against fake powercap trees, NVML against a simulated module, the estimate for real."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgellm.devices.energy import (EstimateSource, NvmlSource, PowerModel, RaplSource, SourceUnavailable,
                                    build_chain, power_model_for)
from edgellm.metrics import RawCounters, compute_metrics


def _zone(root: Path, name: str, energy_uj: int, max_uj: int = 262143328850) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (d / "name").write_text("package-0\n")
    return d


def test_rapl_fake_sysfs_sums_packages_and_skips_subzones(tmp_path: Path) -> None:
    p0 = _zone(tmp_path, "intel-rapl:0", 1_000_000)
    p1 = _zone(tmp_path, "intel-rapl:1", 5_000_000)
    core = _zone(tmp_path, "intel-rapl:0:0", 7_000_000)  # sub-zone: included in its package, never added
    src = RaplSource(tmp_path)
    a = src.snapshot()
    (p0 / "energy_uj").write_text("3500000\n")
    (p1 / "energy_uj").write_text("6000000\n")
    (core / "energy_uj").write_text("99000000\n")
    assert src.joules(a, src.snapshot()) == pytest.approx(3.5)


def test_rapl_fake_sysfs_handles_wraparound(tmp_path: Path) -> None:
    z = _zone(tmp_path, "intel-rapl:0", 999_000, max_uj=1_000_000)
    src = RaplSource(tmp_path)
    a = src.snapshot()
    (z / "energy_uj").write_text("500000\n")  # wrapped: 1_000 uJ to the top, then 500_000
    assert src.joules(a, src.snapshot()) == pytest.approx(0.501)


def test_rapl_fake_sysfs_unreadable_falls_back_with_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    z = _zone(tmp_path, "intel-rapl:0", 1)
    (z / "energy_uj").chmod(0o000)
    if os.geteuid() == 0:  # root reads any file: make the fake counter refuse as the kernel does for non-root
        real = Path.read_text

        def refuse(self: Path, *args: object, **kwargs: object) -> str:
            if self.name == "energy_uj":
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kwargs)  # type: ignore[arg-type]  # forwarding the wrapped call's own arguments

        monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(SourceUnavailable, match="not readable"):
        RaplSource(tmp_path)
    meter = build_chain("cpu", powercap_root=tmp_path, power_model=PowerModel("test", 2.0, "test"))
    assert meter.method == "estimated:test" and "not readable" in meter.note


def test_rapl_fake_sysfs_malformed_counter_falls_back(tmp_path: Path) -> None:
    z = _zone(tmp_path, "intel-rapl:0", 1)
    (z / "max_energy_range_uj").write_text("not-a-number\n")
    meter = build_chain("cpu", powercap_root=tmp_path, power_model=PowerModel("test", 2.0, "test"))
    assert meter.method == "estimated:test" and "cannot read" in meter.note


def test_rapl_missing_tree_falls_back_to_labelled_estimate(tmp_path: Path) -> None:
    meter = build_chain("cpu", powercap_root=tmp_path / "absent")
    assert meter.method.startswith("estimated:tdp/")
    assert "does not exist" in meter.note and "W" not in meter.method


def test_chain_prefers_rapl_on_fake_sysfs(tmp_path: Path) -> None:
    _zone(tmp_path, "intel-rapl:0", 10)
    assert build_chain("cpu", powercap_root=tmp_path).method == "rapl"


class SimulatedNVML:
    """Stands in for pynvml: two GPUs whose energy counters (mJ) advance by 250 mJ per read."""

    def __init__(self, supported: bool = True) -> None:
        self.energy = [1000, 50_000]
        self.supported = supported

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if not self.supported:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        self.energy[h] += 250
        return self.energy[h]


def test_nvml_simulated_reads_selected_gpu(tmp_path: Path) -> None:
    nvml = SimulatedNVML()
    meter = build_chain("cuda:1", powercap_root=tmp_path / "absent", nvml=nvml)
    assert meter.method == "nvml"
    t = meter.start()
    reading = meter.measure(t, meter.start())
    assert reading.total_j == pytest.approx(0.5) and reading.prefill_j == pytest.approx(0.25)
    assert nvml.energy[0] == 1000  # GPU 0 never touched


def test_nvml_simulated_unsupported_counter_falls_back(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="NOT_SUPPORTED"):
        NvmlSource([0], SimulatedNVML(supported=False))
    meter = build_chain("cuda:0", powercap_root=tmp_path / "absent", nvml=SimulatedNVML(supported=False))
    assert meter.method.startswith("estimated:") and "nvml" in meter.note and "rapl" in meter.note


def test_cpu_device_never_uses_nvml(tmp_path: Path) -> None:
    nvml = SimulatedNVML()
    meter = build_chain("cpu", powercap_root=tmp_path / "absent", nvml=nvml)
    assert meter.method != "nvml"


def test_power_model_from_profile_and_table() -> None:
    pi = power_model_for("profile:raspberry-pi-5")
    assert pi.name == "profile/raspberry-pi-5" and pi.watts_per_core == pytest.approx(1.3)
    assert power_model_for("cpu", cpu_name="AMD EPYC 7763 64-Core Processor").name == "tdp/server-x86_64"
    assert power_model_for("cpu", cpu_name="Mystery CPU", arch="aarch64").name == "tdp/generic-aarch64"


def test_estimate_scales_with_cpu_time() -> None:
    src = EstimateSource(PowerModel("m", 3.0, "test"))
    a = src.snapshot()
    x = 0
    while src.snapshot() - a < 0.05:
        x += 1
    assert src.joules(a, src.snapshot()) == pytest.approx(3.0 * (src.snapshot() - a), rel=0.2)


def test_metrics_split_prefill_and_decode_energy() -> None:
    from edgellm.devices.energy import EnergyReading

    c = RawCounters(prompt_tokens=4)
    c.token_times = [c.start + 0.1, c.start + 0.2, c.start + 0.3]
    c.finish()
    m = compute_metrics(c, backend="b", device="cpu", threads=1, load_s=0.0,
                        energy=EnergyReading(3.0, 1.0, 2.0, "rapl"))
    assert (m.energy_j, m.energy_prefill_j, m.energy_decode_j) == (3.0, 1.0, 2.0)
    assert m.energy_per_token_j == pytest.approx(1.0) and m.energy_per_decode_token_j == pytest.approx(1.0)


@pytest.mark.slow
def test_generation_reports_labelled_estimate_on_this_machine(smollm2_gguf) -> None:
    import edgellm

    with edgellm.load(smollm2_gguf("Q4_0"), threads=1) as model:
        m = model.generate("The capital of France is", max_tokens=8, temperature=0.0).metrics
    if Path("/sys/class/powercap").exists() and m.energy_method == "rapl":
        pytest.skip("this machine exposes RAPL")  # then rapl is used, which is right too
    assert m.energy_method.startswith("estimated:")
    assert m.energy_j is not None and m.energy_j > 0
    assert m.energy_prefill_j is not None and m.energy_decode_j is not None
    assert m.energy_prefill_j + m.energy_decode_j == pytest.approx(m.energy_j, rel=0.05)
    assert "prefill" in m.summary() and m.energy_method in m.summary()


def test_a_resolved_device_is_not_parsed_again() -> None:
    """planning/bundling/energy take the Device resolve_device made; its profile is used as is (issue 12)."""
    from dataclasses import replace

    from edgellm.devices.profiles import get_profile
    from edgellm.planning import resolve_device

    dev = resolve_device("profile:raspberry-pi-5")
    renamed = replace(dev, name="my-board", profile=get_profile("raspberry-pi-5"))   # no "profile:" spec to parse
    assert power_model_for(renamed).name == power_model_for("profile:raspberry-pi-5").name == "profile/raspberry-pi-5"
    assert build_chain(renamed).method.startswith("estimated")          # a profile: the host's counters never apply
