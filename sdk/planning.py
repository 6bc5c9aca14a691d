"""Planning façade: read model facts from any source, resolve a device spec, and call devices.planner.

This is the one place that wires converters' readers to the devices room: `devices/` gets plain data.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .devices.budgets import parse_memory, parse_quality_loss, parse_speed
from .devices.cpu import detect_cpu
from .devices.cuda import detect_cuda
from .devices.planner import Plan, plan_model
from .devices.profiles import get_profile
from .devices.threads import ThreadChoice, pick_threads, profile_threads
from .devices.types import CUDAInventory, Device
from .errors import DeviceError
from .model_facts import _gguf_file, facts_from_gguf, facts_from_hf, facts_from_onnx, genai_decoder, read_model_facts

# facts readers re-exported: `edgellm.planning.facts_from_gguf` etc. keep working
__all__ = ["facts_from_gguf", "facts_from_hf", "facts_from_onnx", "genai_decoder", "kernel_reason", "plan",
           "read_model_facts", "replace_reasons", "resolve_device", "tune_threads"]

log = logging.getLogger(__name__)



# --- devices ------------------------------------------------------------------------------------------
def _host_bandwidth(threads: int) -> float | None:
    from .devices.bandwidth import measure_bandwidth

    try:
        return measure_bandwidth(threads).read_gbs
    except (MemoryError, OSError) as exc:  # a tiny device may not spare the probe's buffer
        log.warning("bandwidth probe failed (%s); planning with a default", exc)
        return None


def resolve_device(spec: str | Device = "auto", *, cuda: CUDAInventory | None = None, target: bool = False,
                   bandwidth_gbs: float | None = None, profiles_path: Path | None = None) -> Device:
    """A Device for "auto" | "cpu" | "cuda" | "cuda:N" | "profile:NAME".

    `cuda` injects a CUDA inventory (tests pass a simulated one). "profile:NAME" runs on this host under the
    profile's thread and memory caps; with `target=True` (planning) it also carries the profile's GPU and
    bandwidth, describing the target rather than this host.
    """
    if isinstance(spec, Device):
        return spec
    text = str(spec).strip().lower()
    cpu = detect_cpu()
    reasons: list[str] = []
    if cpu.cgroup_memory_limit_bytes or cpu.cgroup_cpu_limit:
        reasons.append(f"container limits ({cpu.cgroup_version}): memory "
                       f"{cpu.cgroup_memory_limit_bytes or 'unlimited'}, CPUs {cpu.cgroup_cpu_limit or 'unlimited'}")
    if text.startswith("profile:"):
        profile = get_profile(spec.split(":", 1)[1].strip(), profiles_path)
        # On this host the caps are the profile's, never more than the host has; as a planning target the
        # profile's own numbers describe the device.
        cap, _ = profile_threads(profile)   # big cores only on a big.LITTLE SoC
        threads = cap if target else min(cap, cpu.usable_cores)
        memory = profile.app_memory_bytes if target else min(profile.app_memory_bytes, cpu.usable_memory_bytes)
        reasons.append(f"profile {profile.name}: {threads} threads (profile {profile.threads}, host "
                       f"{cpu.usable_cores}), memory cap {memory} bytes (profile {profile.app_memory_bytes})")
        gpus: tuple = ()
        if target and profile.gpu is not None:
            from .devices.types import GPUInfo

            gpus = (GPUInfo(0, profile.gpu.name, profile.app_memory_bytes, profile.app_memory_bytes,
                            profile.gpu.compute_capability or (0, 0), profile.gpu.bandwidth_gbs),)
        uses_cuda = bool(gpus) and any(p.provider == "CUDA" for p in profile.preferred)
        return Device(name=f"profile:{profile.name}", kind="cuda" if uses_cuda else "cpu", threads=threads,
                      memory_bytes=memory, isa=profile.isa if target else cpu.isa,
                      arch=profile.arch if target else cpu.arch,
                      bandwidth_gbs=profile.bandwidth_gbs if target else (bandwidth_gbs or _host_bandwidth(threads)),
                      gpus=gpus, llama_gpu_offload=uses_cuda, profile=profile, reasons=tuple(reasons),
                      llama_safe_types=() if target else _safe_types())
    if text not in ("auto", "cpu", "cuda") and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or profile:NAME")
    threads = cpu.usable_cores
    bandwidth = bandwidth_gbs or _host_bandwidth(threads)
    host = Device(name="cpu", kind="cpu", threads=threads, memory_bytes=cpu.usable_memory_bytes, isa=cpu.isa,
                  arch=cpu.arch, bandwidth_gbs=bandwidth, reasons=tuple(reasons), llama_safe_types=_safe_types())
    if text == "cpu":
        return host
    inventory = cuda if cuda is not None else detect_cuda()
    index = int(text[5:]) if text.startswith("cuda:") else 0
    if not inventory.gpus:
        why = f"no CUDA GPU: {inventory.reason}; using the CPU"
        (log.warning if text != "auto" else log.info)(why)
        return replace_reasons(host, reasons + [why])
    if index >= len(inventory.gpus):
        raise DeviceError(f"{spec!r} does not exist: {len(inventory.gpus)} CUDA GPU(s) found")
    if not (inventory.llama_gpu_offload or inventory.ort_cuda):
        why = (f"{inventory.gpus[index].name} found but no runtime can use it ({inventory.llama_reason}; "
               f"{inventory.ort_reason}); using the CPU")
        return replace_reasons(host, reasons + [why])
    gpu = inventory.gpus[index]
    return Device(name=f"cuda:{index}", kind="cuda", threads=threads, memory_bytes=cpu.usable_memory_bytes,
                  isa=cpu.isa, arch=cpu.arch, bandwidth_gbs=bandwidth, gpus=(gpu,), ort_cuda=inventory.ort_cuda,
                  llama_gpu_offload=inventory.llama_gpu_offload, llama_safe_types=host.llama_safe_types,
                  reasons=tuple(reasons + [f"GPU {gpu.name}: {gpu.vram_free_bytes} bytes free of "
                                           f"{gpu.vram_total_bytes}, compute {gpu.compute_capability}"]))


def _safe_types() -> tuple[str, ...]:
    """GGML types this host's llama.cpp build runs only with the safe kernel switch (empty without llama.cpp)."""
    from .errors import EdgeLLMError
    from .runtimes.llama_native import build_info, host_isa, matching_defects, read_verdicts

    try:
        types = {t for d in matching_defects(host_isa(), build_info().features) for t in d.types}
        types |= {f for f, v in (read_verdicts() or {}).items() if v.default_bad}
    except EdgeLLMError:
        return ()
    return tuple(sorted(types))


def replace_reasons(device: Device, reasons: list[str]) -> Device:
    from dataclasses import replace

    return replace(device, reasons=tuple(reasons))


# --- planning -----------------------------------------------------------------------------------------
def plan(model: str | Path, device: str | Device = "auto", max_memory: str | int | None = None,
         min_tps: str | float | None = None, max_quality_loss: str | float | None = None,
         n_ctx: int | None = None, *, cuda: CUDAInventory | None = None, context: int | None = None) -> Plan:
    """Plan how to run `model` on `device` within the budgets, before loading anything.

    n_ctx: the context to plan for, in tokens (None: the largest of the model's up to 4096 that fits).
    `context=` is its deprecated name (FutureWarning; removed in the next release).
    Raises BudgetError for unparsable budgets, ProfileError for unknown profiles and InsufficientMemoryError
    (naming required and available memory) when nothing fits.
    """
    from .deprecation import renamed
    from .devices.planner import Budgets

    n_ctx = renamed("plan", "context", "n_ctx", context, n_ctx)
    budgets = Budgets(max_memory=parse_memory(max_memory), min_tps=parse_speed(min_tps),
                      max_quality_loss=parse_quality_loss(max_quality_loss), n_ctx=_context(n_ctx))
    facts = read_model_facts(model)
    dev = resolve_device(device, cuda=cuda, target=True)
    from .edge_requirements import runtime_refusals

    refusals, checked = runtime_refusals(Path(model), facts, dev)
    result = plan_model(facts, dev, budgets, model_name=Path(model).name, runtime_refusals=refusals)
    if checked:
        from dataclasses import replace

        result = replace(result, reasons=result.reasons + (checked,))
    if result.runtime == "llama.cpp" and dev.profile is None:  # this host's llama.cpp build will run it
        from dataclasses import replace

        result = replace(result, reasons=result.reasons + (kernel_reason(model, result.quant),))
    return result


def kernel_reason(model: str | Path, quant: str) -> str:
    """Which llama.cpp CPU kernels this host uses for `model` (an artifact) or for `quant` (an HF folder)."""
    from .errors import EdgeLLMError
    from .runtimes.llama_native import (build_info, decide_policy, host_isa, kernel_policy, matching_defects,
                                        read_verdicts)

    try:
        gguf = _gguf_file(Path(model))
        if gguf is not None:
            policy = kernel_policy(gguf)
        else:
            from .converters.gguf_types import get_quant

            main = get_quant(quant).main_type
            policy = decide_policy({main}, matching_defects(host_isa(), build_info().features), read_verdicts())
    except EdgeLLMError as exc:
        return f"llama.cpp kernels: not decided ({exc.message})"
    if policy.refused:
        return "llama.cpp kernels: refused on this CPU (" + "; ".join(policy.refused) + ")"
    return f"llama.cpp kernels: {policy.describe()}"


def _context(value: Any) -> int | None:
    from .errors import BudgetError

    if value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BudgetError(f"n_ctx must be a number of tokens, got {value!r}") from None
    if n < 16:
        raise BudgetError(f"n_ctx must be at least 16 tokens, got {n}")
    return n


def tune_threads(gguf_path: str | Path, candidates: tuple[int, ...] | None = None, *, n_tokens: int = 16,
                 refresh: bool = False) -> ThreadChoice:
    """Pick the decode thread count for a GGUF on this machine with a short llama.cpp sweep (cached)."""
    from .devices.threads import default_candidates
    from .runtimes.llama_native import open_llama, set_threads

    path = Path(gguf_path)
    cap = detect_cpu().usable_cores
    cands = candidates or default_candidates(max(cap, 1))
    stat = path.stat()
    llm = open_llama(path, n_ctx=256, n_threads=max(cands))
    try:
        prompt = llm.tokenize(b"The history of the region")

        def measure(threads: int) -> float:
            import time

            set_threads(llm, threads)
            llm.reset()
            llm.eval(prompt)
            llm.eval([prompt[-1]])  # warm-up step
            start = time.perf_counter()
            for _ in range(n_tokens):
                llm.eval([prompt[-1]])
            return n_tokens / (time.perf_counter() - start)

        return pick_threads(measure, cands, key=f"{path.name}:{stat.st_size}", refresh=refresh)
    finally:
        llm.close()
