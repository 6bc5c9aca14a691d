"""Energy meters: RAPL (powercap sysfs) -> NVML (GPU energy counter) -> an estimate, each reading labelled.

A meter takes snapshots; the joules between two snapshots come from the first source in the chain that
could be read when the meter was built. `energy_method` names the source: "rapl", "nvml" or
"estimated:<model>", where the estimate is CPU time x a per-core active power taken from the device
profile or from a small TDP table kept here as data. `meter.note` says why a better source was not used
(RAPL files are root-only on most kernels since 2020; containers hide /sys/class/powercap).

`sdk/model.py` calls `start()` before prefill, `start()` again at the first token (the prefill/decode
mark) and `measure()`/`stop()` at the end.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from .types import Device, Profile

log = logging.getLogger(__name__)

POWERCAP_ROOT = Path("/sys/class/powercap")

# Active watts per busy core when nothing better is known: (regex on the CPU model name, W/core, label).
# Derived from TDP / core count of common parts; a rough figure, and labelled as such.
TDP_TABLE: tuple[tuple[str, float, str], ...] = (
    (r"EPYC|Xeon", 4.0, "server-x86_64"),            # 200-280 W over 48-96 cores + uncore
    (r"Ryzen .* (7|9) .*U|Core.*i[357]-\d+U|Core Ultra .*U", 2.5, "laptop-u-x86_64"),  # 15-28 W, 4-12 cores
    (r"Ryzen|Core.*i[3579]|Core Ultra", 8.0, "desktop-x86_64"),  # 65-125 W over 6-16 cores
    (r"Apple M", 2.0, "apple-silicon"),
    (r"Cortex-A7[2-9]|Cortex-X|Neoverse", 1.3, "arm-big-core"),
    (r"Cortex-A5", 0.3, "arm-little-core"),
)
GENERIC_W_PER_CORE: dict[str, tuple[float, str]] = {
    "x86_64": (6.0, "generic-x86_64"), "aarch64": (1.5, "generic-aarch64"), "arm64": (1.5, "generic-aarch64"),
}


class EnergySource(Protocol):
    """One way to read energy. `snapshot()` is cheap; `joules(a, b)` is the energy between two snapshots."""
    method: str

    def snapshot(self) -> Any: ...
    def joules(self, a: Any, b: Any) -> float: ...


class SourceUnavailable(Exception):
    """Raised by a source constructor; the message says why (it ends up in `meter.note`)."""


# -- RAPL -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RaplZone:
    name: str
    energy_file: Path
    max_range_uj: int


class RaplSource:
    """Package-level RAPL zones (`intel-rapl:N`, not their `:N:M` sub-zones, which they already include)."""
    method = "rapl"

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        if not root.is_dir():
            raise SourceUnavailable(f"rapl: {root} does not exist (no powercap driver, or a container hides it)")
        zones = []
        for d in sorted(root.glob("*rapl:*")):
            if d.name.count(":") != 1:  # sub-zone (core, uncore, dram) of a package
                continue
            try:
                max_range = int((d / "max_energy_range_uj").read_text().strip())
                (d / "energy_uj").read_text()
            except PermissionError:
                raise SourceUnavailable(f"rapl: {d / 'energy_uj'} is not readable (root only on this kernel; "
                                        "`sudo chmod o+r` it to measure)") from None
            except (OSError, ValueError) as exc:
                raise SourceUnavailable(f"rapl: cannot read {d}: {exc}") from None
            zones.append(_RaplZone(d.name, d / "energy_uj", max_range))
        if not zones:
            raise SourceUnavailable(f"rapl: no package zones under {root}")
        self.zones = tuple(zones)

    def snapshot(self) -> tuple[int, ...]:
        return tuple(int(z.energy_file.read_text().strip()) for z in self.zones)

    def joules(self, a: Sequence[int], b: Sequence[int]) -> float:
        total_uj = 0
        for zone, x, y in zip(self.zones, a, b):
            delta = y - x
            if delta < 0:  # the counter wrapped around once
                delta += zone.max_range_uj
            total_uj += delta
        return total_uj / 1e6


# -- NVML -----------------------------------------------------------------------------------------
class NvmlSource:
    """`nvmlDeviceGetTotalEnergyConsumption` (millijoules since driver load; Volta and newer)."""
    method = "nvml"

    def __init__(self, indices: Sequence[int] | None = None, nvml: Any = None) -> None:
        if nvml is None:
            try:
                import pynvml  # nvidia-ml-py
            except ImportError:
                raise SourceUnavailable("nvml: nvidia-ml-py is not installed (pip install 'edgellm[cuda]')") from None
            nvml = pynvml
        self._nvml = nvml
        try:
            nvml.nvmlInit()
            count = int(nvml.nvmlDeviceGetCount())
            wanted = list(indices) if indices is not None else list(range(count))
            if not wanted or any(i >= count for i in wanted):
                raise SourceUnavailable(f"nvml: GPU(s) {wanted} not present ({count} visible)")
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in wanted]
            for h in self._handles:
                nvml.nvmlDeviceGetTotalEnergyConsumption(h)
        except SourceUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - NVMLError subclasses: no driver, not supported (pre-Volta)
            raise SourceUnavailable(f"nvml: energy counter unreadable ({exc})") from None

    def snapshot(self) -> tuple[int, ...]:
        return tuple(int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._handles)

    def joules(self, a: Sequence[int], b: Sequence[int]) -> float:
        return sum(max(0, y - x) for x, y in zip(a, b)) / 1e3


# -- estimate -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PowerModel:
    name: str              # goes into energy_method as "estimated:<name>"
    watts_per_core: float  # active power of one busy core
    basis: str             # where the figure comes from


def _cpu_model_name(proc_root: Path = Path("/proc")) -> str:
    try:
        text = (proc_root / "cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    m = re.search(r"^(?:model name|Model|Hardware)\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else ""


def _profile_of(device: str | Device) -> Profile | None:
    """A Device carries its profile (parsed once, by resolve_device); a bare spec string is parsed here."""
    if isinstance(device, Device):
        return device.profile
    if device.startswith("profile:"):
        from .profiles import get_profile

        return get_profile(device.split(":", 1)[1])
    return None


def power_model_for(device: str | Device, cpu_name: str | None = None, arch: str | None = None) -> PowerModel:
    """The per-core power model: the device profile's when `device` has one (`profile:NAME`), else the TDP
    table. Pass the `Device` you resolved: its profile is used as is, not parsed again."""
    prof = _profile_of(device)
    if prof is not None:
        return PowerModel(f"profile/{prof.name}", prof.power.active_w_per_big_core,
                          f"profile {prof.name}: {prof.power.active_w_per_big_core} W per busy big core")
    name = _cpu_model_name() if cpu_name is None else cpu_name
    for pattern, watts, label in TDP_TABLE:
        if name and re.search(pattern, name):
            return PowerModel(f"tdp/{label}", watts, f"TDP table row {label!r} matched CPU {name!r}")
    machine = (arch or os.uname().machine).lower()
    watts, label = GENERIC_W_PER_CORE.get(machine, (5.0, "generic"))
    return PowerModel(f"tdp/{label}", watts, f"no TDP table row for CPU {name or '?'!r}; generic {machine} figure")


class EstimateSource:
    """Joules = process CPU seconds (all threads) x active watts per busy core. Idle power is not counted."""

    def __init__(self, model: PowerModel) -> None:
        self.model = model
        self.method = f"estimated:{model.name}"

    def snapshot(self) -> float:
        return time.process_time()

    def joules(self, a: float, b: float) -> float:
        return max(0.0, b - a) * self.model.watts_per_core


# -- the meter ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnergyReading:
    total_j: float | None
    prefill_j: float | None
    decode_j: float | None
    method: str


class EnergyMeter:
    """Snapshots from one source. `start()` -> token; `stop(token, counters)` -> (joules, method)."""

    def __init__(self, source: EnergySource, note: str = "") -> None:
        self.source = source
        self.method = source.method
        self.note = note

    def start(self) -> Any:
        try:
            return self.source.snapshot()
        except OSError as exc:  # a counter that vanished mid-run (hot-unplug, permissions changed)
            log.warning("energy source %s failed: %s", self.method, exc)
            return None

    def _between(self, a: Any, b: Any) -> float | None:
        return None if a is None or b is None else self.source.joules(a, b)

    def measure(self, token: Any, mark: Any = None, counters: Any = None) -> EnergyReading:
        """Total energy since `token`, split at `mark` (the first token) into prefill and decode."""
        end = self.start()
        total = self._between(token, end)
        if mark is None:
            return EnergyReading(total, None, None, self.method)
        return EnergyReading(total, self._between(token, mark), self._between(mark, end), self.method)

    def stop(self, token: Any, counters: Any = None) -> tuple[float | None, str]:
        reading = self.measure(token, None, counters)
        return reading.total_j, reading.method


def _gpu_indices(device: str) -> list[int] | None:
    if device.startswith("cuda:") and device[5:].isdigit():
        return [int(device[5:])]
    return None


def build_chain(device: str | Device, *, powercap_root: Path = POWERCAP_ROOT, nvml: Any = None,
                power_model: PowerModel | None = None) -> EnergyMeter:
    """The first readable source for `device` (a resolved Device, or a spec string); CUDA devices try NVML
    first, CPU devices never use it."""
    notes: list[str] = []
    factories: list[Any] = [lambda: RaplSource(powercap_root)]
    name = device.name if isinstance(device, Device) else device
    if name.startswith("cuda"):
        factories.insert(0, lambda: NvmlSource(_gpu_indices(name), nvml))
    elif _profile_of(device) is not None:
        factories = []  # the host's counters say nothing about the profiled device
        notes.append(f"{name} is a profile, so the host's counters do not apply")
    for make in factories:
        try:
            source = make()
        except SourceUnavailable as exc:
            notes.append(str(exc))
            continue
        return EnergyMeter(source, "; ".join(notes))
    model = power_model or power_model_for(device)
    notes.append(f"estimate: {model.basis} x process CPU time (idle power not counted)")
    return EnergyMeter(EstimateSource(model), "; ".join(notes))


_DEFAULT: dict[str, EnergyMeter] = {}


def default_meter(device: str | Device) -> EnergyMeter:
    """The meter `edgellm.load` attaches to a model (it passes its resolved Device); built once per device
    name and process."""
    name = device.name if isinstance(device, Device) else device
    if name not in _DEFAULT:
        _DEFAULT[name] = build_chain(device)
        log.info("energy for %s: %s (%s)", name, _DEFAULT[name].method, _DEFAULT[name].note)
    return _DEFAULT[name]
