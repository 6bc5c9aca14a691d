import json
from pathlib import Path

import pytest

from edgellm.devices.budgets import parse_memory, parse_quality_loss, parse_speed
from edgellm.devices.profiles import PROFILES_FILE, get_profile, load_profiles
from edgellm.errors import BudgetError, ProfileError
from edgellm.planning import resolve_device


@pytest.mark.parametrize("text,expected", [("2GiB", 2 << 30), ("512MB", 512_000_000), ("1.5G", int(1.5 * (1 << 30))),
                                           ("64 MiB", 64 << 20), (1048576, 1048576), ("8g", 8 << 30)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["2XB", "lots", "", "-1GiB", "0", "GiB", True])
def test_unparsable_memory_budget_raises_budget_error(bad):
    with pytest.raises(BudgetError):
        parse_memory(bad)


def test_speed_and_quality_budgets():
    assert parse_speed("20tok/s") == 20.0 and parse_speed(12) == 12.0
    assert parse_quality_loss("5%") == pytest.approx(0.05) and parse_quality_loss("0.02") == 0.02
    for bad in ("fast", "-3"):
        with pytest.raises(BudgetError):
            parse_speed(bad)
    with pytest.raises(BudgetError, match="between 0 and 1"):
        parse_quality_loss("150%")


def test_packaged_profiles_load_and_are_consistent():
    profiles = load_profiles()
    for name in ("raspberry-pi-5", "jetson-orin-nano", "android-midrange", "android-flagship", "laptop-8gb-cpu"):
        assert name in profiles
    pi5 = profiles["raspberry-pi-5"]
    assert pi5.ram_bytes == 8 << 30 and pi5.threads == 4 and "dotprod" in pi5.isa
    assert pi5.preferred[0].format == "gguf" and pi5.preferred[0].quant == "Q4_0"
    assert profiles["jetson-orin-nano"].gpu is not None and profiles["jetson-orin-nano"].gpu.memory_shared
    assert profiles["android-midrange"].preferred[0].format == "onnx"
    assert all(p.app_memory_bytes <= p.ram_bytes and p.power.max_w > p.power.idle_w for p in profiles.values())


def test_unknown_profile_lists_known_names():
    with pytest.raises(ProfileError) as exc:
        get_profile("raspberry-pi-9")
    assert "raspberry-pi-5" in str(exc.value) and "laptop-8gb-cpu" in str(exc.value)
    with pytest.raises(ProfileError, match="known profiles"):
        resolve_device("profile:nope", bandwidth_gbs=10.0)


def _mutated(tmp_path: Path, edit) -> Path:
    data = json.loads(PROFILES_FILE.read_text())
    edit(data["profiles"]["raspberry-pi-5"])
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit,field", [
    (lambda p: p.pop("threads"), "threads"),
    (lambda p: p.update(ram="eight gigs"), "ram"),
    (lambda p: p.update(bandwidth_gbs=-1), "bandwidth_gbs"),
    (lambda p: p.update(cores_big=True), "cores_big"),
    (lambda p: p["preferred"][0].update(format="tflite"), "format"),
    (lambda p: p["power"].pop("idle_w"), "idle_w"),
    (lambda p: p.update(threads=64), "threads"),
])
def test_malformed_profile_file_names_the_field(tmp_path, edit, field):
    with pytest.raises(ProfileError) as exc:
        load_profiles(_mutated(tmp_path, edit))
    assert field in str(exc.value) and "raspberry-pi-5" in str(exc.value)


def test_profile_file_not_json(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text("{profiles: oops")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profiles(bad)


def test_profile_device_runs_on_this_host_under_the_profile_caps():
    import os

    device = resolve_device("profile:raspberry-pi-5", bandwidth_gbs=10.0)
    assert device.threads == min(4, os.cpu_count() or 1)
    assert device.memory_bytes <= 6 << 30 and device.profile is not None
    assert device.kind == "cpu"
    target = resolve_device("profile:raspberry-pi-5", target=True)
    assert target.threads == 4 and target.memory_bytes == 6 << 30 and target.bandwidth_gbs == 9.0
    assert target.arch == "aarch64"
