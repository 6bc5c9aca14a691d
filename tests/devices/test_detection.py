from pathlib import Path
from types import SimpleNamespace

from edgellm.devices.cpu import detect_cpu, parse_cpuinfo, read_cgroup_limits
from edgellm.devices.cuda import detect_cuda, query_nvml

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

processor\t: 1
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
"""


def test_this_host_cpu_is_detected():
    info = detect_cpu()
    assert info.logical_cores >= info.physical_cores >= 1
    assert info.ram_total_bytes > info.ram_available_bytes > 0
    assert info.usable_cores >= 1 and info.usable_memory_bytes > 0
    flags = Path("/proc/cpuinfo").read_text()
    assert ("avx2" in info.isa) == (" avx2" in flags)


def test_arm_cpuinfo_features_are_normalized():
    model, isa, physical, logical = parse_cpuinfo(ARM_CPUINFO)
    assert {"neon", "dotprod", "fp16"} <= set(isa) and "i8mm" not in isa and "sve" not in isa
    assert logical == 2 and physical == 2


def test_cgroup_v2_limits(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "self/cgroup").write_text("0::/app\n")
    (cg / "app").mkdir(parents=True)
    (cg / "cgroup.controllers").write_text("cpu memory\n")
    (cg / "app/memory.max").write_text("2147483648\n")
    (cg / "app/cpu.max").write_text("150000 100000\n")
    assert read_cgroup_limits(proc, cg) == ("v2", 2 << 30, 1.5)
    (cg / "app/memory.max").write_text("max\n")
    (cg / "app/cpu.max").write_text("max 100000\n")
    assert read_cgroup_limits(proc, cg) == ("v2", None, None)


def test_cgroup_v1_limits(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "self/cgroup").write_text("4:memory:/c1\n1:cpu,cpuacct:/c1\n")
    (cg / "memory/c1").mkdir(parents=True)
    (cg / "cpu/c1").mkdir(parents=True)
    (cg / "memory/c1/memory.limit_in_bytes").write_text("1073741824\n")
    (cg / "cpu/c1/cpu.cfs_quota_us").write_text("200000\n")
    (cg / "cpu/c1/cpu.cfs_period_us").write_text("100000\n")
    assert read_cgroup_limits(proc, cg) == ("v1", 1 << 30, 2.0)


class FakeNVMLError(Exception):
    pass


def fake_nvml(gpus, fail_at=None):
    """A stand-in for pynvml with `gpus` = [(name, total, free, (major, minor))]; fail_at names a call that raises."""
    def call(name, fn):
        def wrapped(*a):
            if name == fail_at:
                raise FakeNVMLError(f"{name}: driver/library version mismatch")
            return fn(*a)
        return wrapped
    return SimpleNamespace(
        NVMLError=FakeNVMLError,
        nvmlInit=call("nvmlInit", lambda: None), nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"550.54",
        nvmlDeviceGetCount=call("nvmlDeviceGetCount", lambda: len(gpus)),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: gpus[h][0],
        nvmlDeviceGetMemoryInfo=call("nvmlDeviceGetMemoryInfo", lambda h: SimpleNamespace(total=gpus[h][1], free=gpus[h][2])),
        nvmlDeviceGetCudaComputeCapability=lambda h: gpus[h][3],
        nvmlDeviceGetMemoryBusWidth=lambda h: 256, nvmlDeviceGetMaxClockInfo=lambda h, t: 7000)


def test_cuda_inventory_simulated():
    inv = detect_cuda(nvml=fake_nvml([("NVIDIA GeForce RTX 4060", 8 << 30, 7 << 30, (8, 9))]),
                      ort_probe=lambda: (False, "cpu only"), llama_probe=lambda: (True, ""))
    assert len(inv.gpus) == 1 and inv.reason == "" and inv.driver_version == "550.54"
    gpu = inv.gpus[0]
    assert gpu.name == "NVIDIA GeForce RTX 4060" and gpu.compute_capability == (8, 9)
    assert gpu.vram_free_bytes == 7 << 30 and gpu.bandwidth_gbs == 448.0
    assert inv.llama_gpu_offload and not inv.ort_cuda


def test_broken_driver_gives_empty_inventory_with_reason_simulated():
    for fail in ("nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetMemoryInfo"):
        gpus, reason, _ = query_nvml(fake_nvml([("X", 1, 1, (8, 0))], fail_at=fail))
        assert gpus == () and "version mismatch" in reason and "FakeNVMLError" in reason


def test_no_gpu_simulated():
    gpus, reason, _ = query_nvml(fake_nvml([]))
    assert gpus == () and "no NVIDIA GPU" in reason


def test_real_host_without_gpu_never_crashes():
    inv = detect_cuda()
    assert isinstance(inv.gpus, tuple)
    if not inv.gpus:
        assert inv.reason
