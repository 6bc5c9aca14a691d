"""CPU detection from /proc and /sys: model, cores, ISA features, caches, RAM, cgroup limits.

Every reader takes its root path so tests can point it at a fake tree (e.g. an Arm /proc/cpuinfo).
"""
from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

from .arm_parts import arm_cpu_name
from .types import CacheInfo, CPUInfo

log = logging.getLogger(__name__)

# Kernel flag name -> our feature name, for the features the kernels (ggml, MLAS) dispatch on.
X86_FEATURES: dict[str, str] = {
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
    "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
    "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni", "avx512_bf16": "avx512_bf16",
    "amx_tile": "amx_tile", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16",
}
ARM_FEATURES: dict[str, str] = {
    "asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve", "sve2": "sve2",
    "fphp": "fp16", "asimdhp": "fp16", "bf16": "bf16",
}


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...], int, int]:
    """(model, isa features, physical cores, logical cores) from /proc/cpuinfo text (x86 or Arm).

    Arm kernels print no model name: the name comes from the cores' `CPU implementer`/`CPU part` codes
    (devices/arm_parts.py), with the board (`Model`, `Hardware`) after it when the kernel prints one."""
    model = board = ""
    flags: set[str] = set()
    logical = 0
    cores: set[tuple[str, str]] = set()
    physical_id = core_id = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor" and value.isdigit():   # old Arm kernels also print "Processor : AArch64 ..."
            logical += 1
            physical_id = core_id = ""
        elif key in ("model name", "cpu model") and not model:
            model = value
        elif key in ("hardware", "model") and not board and value and not value.isdigit():  # x86's model is a number
            board = value
        elif key in ("flags", "features"):
            flags.update(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
            cores.add((physical_id, core_id))
    table = {**X86_FEATURES, **ARM_FEATURES}
    isa = tuple(sorted({table[f] for f in flags if f in table}))
    physical = len(cores) if cores else logical
    arm = None if model else arm_cpu_name(text)
    if arm:
        model = f"{arm} ({board})" if board else arm
    return model or board or platform.processor() or "unknown", isa, physical, logical


def read_caches(sys_root: Path = Path("/sys")) -> tuple[CacheInfo, ...]:
    base = sys_root / "devices/system/cpu/cpu0/cache"
    caches: list[CacheInfo] = []
    for index in sorted(base.glob("index*")):
        level, kind, size = (_read(index / n) for n in ("level", "type", "size"))
        if not (level and kind and size):
            continue
        size = size.strip()
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        shared = _read(index / "shared_cpu_list") or "0"
        caches.append(CacheInfo(int(level), kind.strip(), int(size.rstrip("KMG")) * mult, _count_cpus(shared)))
    return tuple(caches)


def _count_cpus(cpu_list: str) -> int:
    count = 0
    for part in cpu_list.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-")
            count += int(hi) - int(lo) + 1
        elif part:
            count += 1
    return max(1, count)


def read_meminfo(proc_root: Path = Path("/proc")) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes."""
    values: dict[str, int] = {}
    for line in (_read(proc_root / "meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    total = values.get("MemTotal", 0)
    return total, values.get("MemAvailable", values.get("MemFree", total))


def read_cgroup_limits(proc_root: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup"),
                       ) -> tuple[str | None, int | None, float | None]:
    """(cgroup version, memory limit bytes, CPU limit) of this process; None where unlimited or unknown."""
    groups = {}
    for line in (_read(proc_root / "self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctrl in (parts[1].split(",") if parts[1] else [""]):
                groups[ctrl] = parts[2]
    if (cgroup_root / "cgroup.controllers").exists():  # unified hierarchy (v2)
        rel = groups.get("", "/").lstrip("/")
        mem = _v2_value(_find_up(cgroup_root, rel, "memory.max"))
        cpu = _read(_find_up(cgroup_root, rel, "cpu.max") or Path("/nonexistent"))
        cpu_limit = None
        if cpu and not cpu.split()[0] == "max":
            quota, period = cpu.split()[:2]
            cpu_limit = int(quota) / int(period)
        return "v2", mem, cpu_limit
    if (cgroup_root / "memory").is_dir() or (cgroup_root / "cpu").is_dir():  # v1
        mem_path = _find_up(cgroup_root / "memory", groups.get("memory", "/").lstrip("/"), "memory.limit_in_bytes")
        mem = _v2_value(mem_path)
        if mem is not None and mem >= 1 << 60:  # v1 writes "unlimited" as a huge page-aligned number
            mem = None
        cpu_dir = cgroup_root / "cpu"
        rel = groups.get("cpu", groups.get("cpu,cpuacct", "/")).lstrip("/")
        v1_quota = _read(_find_up(cpu_dir, rel, "cpu.cfs_quota_us") or Path("/nonexistent"))
        v1_period = _read(_find_up(cpu_dir, rel, "cpu.cfs_period_us") or Path("/nonexistent"))
        cpu_limit = None
        if v1_quota and v1_period and int(v1_quota) > 0:
            cpu_limit = int(v1_quota) / int(v1_period)
        return "v1", mem, cpu_limit
    return None, None, None


def _find_up(root: Path, rel: str, name: str) -> Path | None:
    """The file `name` in the process's cgroup dir, else in the root (containers often mount their own)."""
    for candidate in (root / rel / name, root / name):
        if candidate.exists():
            return candidate
    return None


def _v2_value(path: Path | None) -> int | None:
    text = _read(path) if path else None
    if not text or text.strip() == "max":
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def detect_cpu(proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys"),
               cgroup_root: Path = Path("/sys/fs/cgroup")) -> CPUInfo:
    """Detect this host's CPU. Never raises for missing files: fields fall back to os/platform values."""
    model, isa, physical, logical = parse_cpuinfo(_read(proc_root / "cpuinfo") or "")
    logical = logical or os.cpu_count() or 1
    physical = physical or logical
    if physical == logical and proc_root == Path("/proc"):
        import psutil  # a core dependency; knows SMT siblings on hosts whose cpuinfo lacks core ids

        physical = psutil.cpu_count(logical=False) or physical
    total, available = read_meminfo(proc_root)
    version, mem_limit, cpu_limit = read_cgroup_limits(proc_root, cgroup_root)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") and proc_root == Path("/proc") else None
    info = CPUInfo(model=model, arch=platform.machine() if proc_root == Path("/proc") else _arch_from_isa(isa),
                   physical_cores=physical, logical_cores=logical, isa=isa, caches=read_caches(sys_root),
                   ram_total_bytes=total, ram_available_bytes=available, cgroup_version=version,
                   cgroup_memory_limit_bytes=mem_limit, cgroup_cpu_limit=cpu_limit, affinity_cpus=affinity)
    log.debug("detected CPU %s", info)
    return info


def _arch_from_isa(isa: tuple[str, ...]) -> str:
    return "aarch64" if "neon" in isa else "x86_64"
