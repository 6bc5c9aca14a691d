"""`edgellm devices [--json] [--profiles] [--probe]`: what this host offers, and the named target profiles."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any


def devices(json_output: bool = False, profiles: bool = False, probe: bool = False) -> int:
    from ..devices.bandwidth import measure_bandwidth
    from ..devices.budgets import format_bytes
    from ..devices.cpu import detect_cpu
    from ..devices.cuda import detect_cuda
    from ..devices.profiles import load_profiles

    if profiles:
        from ..devices.planner import profile_default

        table = load_profiles()
        if json_output:
            print(json.dumps({name: {**asdict(p), "default_variant": _variant(profile_default(p))}
                              for name, p in table.items()}, indent=2))
            return 0
        # the variant column is the planner's own first choice for the profile (plan and bundle use the same)
        print("| profile | cores (big+little) | threads | app memory | bandwidth | ISA | variant |")
        print("|---|---|---|---|---|---|---|")
        for p in table.values():
            v = profile_default(p)
            print(f"| {p.name} | {p.cores_big}+{p.cores_little} | {p.threads} | {format_bytes(p.app_memory_bytes)} | "
                  f"{p.bandwidth_gbs:.0f} GB/s | {' '.join(p.isa)} | {v.format} {v.name} ({v.runtime}) |")
        return 0
    if probe:
        return _probe(json_output)
    cpu = detect_cpu()
    cuda = detect_cuda()
    bandwidth = measure_bandwidth(cpu.usable_cores)
    kernels = _kernels()
    if json_output:
        data: dict[str, Any] = {"cpu": asdict(cpu), "cuda": asdict(cuda), "bandwidth": asdict(bandwidth),
                                "llama_cpp_kernels": kernels}
        print(json.dumps(data, indent=2))
        return 0
    rows = [
        ("CPU", f"{cpu.model} ({cpu.arch})"),
        ("cores", f"{cpu.physical_cores} physical / {cpu.logical_cores} logical, {cpu.usable_cores} usable"),
        ("ISA", " ".join(cpu.isa) or "-"),
        ("caches", ", ".join(f"L{c.level}{c.kind[0].lower()} {format_bytes(c.size_bytes)}" for c in cpu.caches) or "-"),
        ("RAM", f"{format_bytes(cpu.ram_total_bytes)} total, {format_bytes(cpu.ram_available_bytes)} available"),
        ("cgroup", f"{cpu.cgroup_version or '-'}: memory "
                   f"{format_bytes(cpu.cgroup_memory_limit_bytes) if cpu.cgroup_memory_limit_bytes else 'unlimited'}"
                   f", CPUs {cpu.cgroup_cpu_limit or 'unlimited'}"),
        ("bandwidth", f"{bandwidth.read_gbs:.1f} GB/s read, {bandwidth.copy_gbs:.1f} GB/s copy"
                      f"{' (cached)' if bandwidth.cached else ''}"),
    ]
    for gpu in cuda.gpus:
        rows.append((f"cuda:{gpu.index}", f"{gpu.name}, {format_bytes(gpu.vram_free_bytes)} free of "
                                          f"{format_bytes(gpu.vram_total_bytes)}, compute "
                                          f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}"))
    if not cuda.gpus:
        rows.append(("CUDA", cuda.reason))
    rows.append(("onnxruntime CUDA", "yes" if cuda.ort_cuda else f"no: {cuda.ort_reason}"))
    rows.append(("llama.cpp offload", "yes" if cuda.llama_gpu_offload else f"no: {cuda.llama_reason}"))
    rows.append(("llama.cpp kernels", kernels["summary"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _variant(option: Any) -> dict[str, str]:
    return {"format": option.format, "quant": option.name, "runtime": option.runtime}


def _kernels() -> dict[str, Any]:
    """This host's llama.cpp build, its known defects and the probe verdicts (plain data)."""
    from ..errors import EdgeLLMError
    from ..runtimes.llama_native import build_info, host_isa, host_policy_summary, matching_defects, read_verdicts

    try:
        info = build_info()
        verdicts = read_verdicts()
        return {"llama_cpp": info.version, "build": info.key, "features": info.features,
                "known_defects": [d.name for d in matching_defects(host_isa(), info.features)],
                "probe": None if verdicts is None else {f: asdict(v) for f, v in verdicts.items()},
                "summary": host_policy_summary()}
    except EdgeLLMError as exc:
        return {"summary": f"unavailable: {exc.message}"}


def _probe(json_output: bool) -> int:
    """Rerun the kernel probe and print its table."""
    from ..kernel_probe import run_probe

    report = run_probe()
    if json_output:
        print(json.dumps({"verdicts": [asdict(v) for v in report.verdicts], "cache": str(report.cache_path),
                          "seconds": round(report.seconds, 2)}, indent=2))
        return 0
    print(report.table())
    print(f"\n{len(report.verdicts) - len(report.bad)} of {len(report.verdicts)} families run llama.cpp's default "
          f"kernels here; probed in {report.seconds:.1f} s, cached in {report.cache_path}")
    print(f"known defects: {_kernels()['known_defects'] or 'none on this CPU and build'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("devices", help="show this host's CPU, memory, bandwidth and GPUs")
    p.add_argument("--json", dest="json_output", action="store_true", help="print JSON")
    p.add_argument("--profiles", action="store_true", help="list the named target profiles instead")
    p.add_argument("--probe", action="store_true",
                   help="rerun the llama.cpp kernel probe (each quant family in a child process) and print it")
    p.set_defaults(func=devices)
