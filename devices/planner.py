"""Planner: choose format, quant, runtime, provider, threads, GPU layers and context for a model on a Device.

Input is plain data (ModelFacts, Device, parsed budgets); output is a Plan whose every choice carries a reason
with numbers. Nothing is loaded: a model that cannot fit is refused here with InsufficientMemoryError.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Mapping

from edgellm.errors import (BackendUnavailableError, BudgetError, InsufficientMemoryError,
                            UnsupportedArchitectureError)

from .budgets import format_bytes
from .memory import (MemoryEstimate, TensorFacts, estimate_llama_cpp, estimate_onnxruntime, kv_cache_bytes,
                     layer_of, repacked_params, tensor_bytes)
from .threads import profile_threads
from .types import Device, ModelFacts, Profile


@dataclass(frozen=True)
class QuantOption:
    name: str
    format: str  # "gguf" | "onnx"
    runtime: str  # "llama.cpp" | "onnxruntime"
    bits_per_weight: float  # average over the 2-D weights, block scales included
    quality_loss: float  # relative perplexity increase vs F16, llama.cpp's table for 7B-class models
    main_type: str  # the GGML type most weights get (for per-tensor sizing)


# The quant ladder, best quality first. Quality losses are the relative perplexity increases llama.cpp
# publishes for LLaMA-7B (quantize README); models under 1B lose more, so treat them as lower bounds.
QUANT_LADDER: tuple[QuantOption, ...] = (
    QuantOption("F16", "gguf", "llama.cpp", 16.0, 0.0, "F16"),
    QuantOption("Q8_0", "gguf", "llama.cpp", 8.5, 0.0001, "Q8_0"),
    QuantOption("int8", "onnx", "onnxruntime", 8.5, 0.002, "Q8_0"),
    QuantOption("Q6_K", "gguf", "llama.cpp", 6.5625, 0.0008, "Q6_K"),
    QuantOption("Q5_K_M", "gguf", "llama.cpp", 5.69, 0.0024, "Q5_K"),
    QuantOption("Q4_K_M", "gguf", "llama.cpp", 4.89, 0.009, "Q4_K"),
    QuantOption("int4", "onnx", "onnxruntime", 4.625, 0.03, "Q4_1"),
    QuantOption("Q4_0", "gguf", "llama.cpp", 4.55, 0.037, "Q4_0"),
    QuantOption("Q3_K_M", "gguf", "llama.cpp", 3.91, 0.041, "Q3_K"),
    QuantOption("Q2_K", "gguf", "llama.cpp", 3.35, 0.147, "Q2_K"),
)
CONTEXT_STEPS = (32768, 16384, 8192, 4096, 2048, 1024, 512)
DEFAULT_CONTEXT = 4096
BANDWIDTH_EFFICIENCY = 0.7  # share of the probed read bandwidth a decode step sustains
# FITTED. Effective matvec throughput per core (GFLOP/s) of llama.cpp's decode on large matrices, and a cost per
# layer per token that does not shrink with the matrices (ops, synchronisation, small-matrix inefficiency): part of
# it serial, part spread over the threads. Fitted on the test machine (AMD EPYC, AVX-512; llama-cpp-python 0.3.36)
# from tokens per CPU-second at 1 thread (contention-free on shared cores): SmolLM2-135M Q4_K_M 61 (raw llama.cpp)
# / 55.6 (edgellm, quiet machine), the 1B Llama-shaped Q4_K_M 19.8-21; and SmolLM2 Q4_K_M at 2 threads on a quiet
# machine, 88.8 tokens/s. The AVX2 and Arm figures are the same per-ISA ratios as before scaled to the AVX-512 fit:
# guesses, not measurements (the Arm profiles are bandwidth-bound at 1B anyway).
GFLOPS_PER_CORE: tuple[tuple[str, float], ...] = (("avx512f", 55.0), ("avx2", 35.0), ("i8mm", 12.0),
                                                  ("dotprod", 8.0), ("neon", 4.0))
LAYER_OVERHEAD_S = (0.15e-3, 0.29e-3)   # (serial, divided by threads) seconds per layer per token
# FITTED. onnxruntime's decode step (MatMulNBits int4/int8) per core, relative to GFLOPS_PER_CORE: tokens per
# CPU-second at 1 thread, SmolLM2 int4 63 and the 1B int4-rtn (int8 head) 13.3, give 35 GFLOP/s against
# llama.cpp's 55 with the same per-layer cost.
ORT_COMPUTE_SHARE = 0.65
# FITTED. llama.cpp's matvec on a type it would repack (memory.REPACKED_TYPES) when the extra buffer types are off
# (the safe kernel switch, e.g. on AMX hosts), relative to GFLOPS_PER_CORE: the 1B Llama-shaped Q4_K_M (all
# matrices Q4_K/Q6_K) on an Intel Xeon (AVX-512, AMX) decoded 7.7 tok/s at 1 thread and 14.5 at 2 with them off,
# 19.3 GFLOP/s per core after the per-layer cost; SmolLM2 Q4_K_M (mostly Q5_0, never repacked) ran at the fitted
# rate on the same host (90.1 tok/s at 2 threads vs 88.5 predicted).
UNREPACKED_SHARE = 0.35
GPU_MEMORY_MARGIN = 0.9  # plan to use at most 90% of free VRAM
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budgets:
    max_memory: int | None = None
    min_tps: float | None = None
    max_quality_loss: float | None = None
    n_ctx: int | None = None      # the context to plan for, in tokens; None: the largest that fits


@dataclass(frozen=True)
class Plan:
    model: str
    device: Device
    format: str
    quant: str
    runtime: str
    provider: str
    threads: int
    n_gpu_layers: int
    n_ctx: int
    memory: MemoryEstimate
    memory_limit_bytes: int
    predicted_decode_tps: float
    quality_loss: float
    needs_conversion: bool
    reasons: tuple[str, ...]

    def summary(self) -> str:
        return (f"{self.format} {self.quant} on {self.runtime}/{self.provider}, {self.threads} threads, "
                f"{self.n_gpu_layers} GPU layers, n_ctx {self.n_ctx}: {format_bytes(self.memory.total_bytes)}, "
                f"~{self.predicted_decode_tps:.0f} tokens/s")


def _facts_at(facts: ModelFacts, option: QuantOption) -> ModelFacts:
    """An HF model's facts as an artifact at `option` would hold them. With a predicted layout (the converter's
    per-tensor types: the quantizer's fallbacks where rows do not fit its blocks, the recipe's upgraded tensors,
    the GGUF's extra tensors and metadata) the artifact's tensors exactly; without one, 2-D weights at the
    quant's average bits/weight and 1-D tensors in F32. Ready artifacts stay as they are."""
    if facts.source != "hf":
        return facts
    layout = facts.layout(option.name) if option.format == "gguf" else None
    if layout is not None:
        size = facts.header_bytes + sum(tensor_bytes(t) for t in layout) if facts.header_bytes else None
        return replace(facts, tensors=layout, source="gguf", quant=option.name, file_bytes=size)
    bpw = f"BPW:{option.bits_per_weight}"
    tensors = tuple(TensorFacts(t.name, t.shape, "F32" if len(t.shape) < 2 else bpw) for t in facts.tensors)
    return replace(facts, tensors=tensors, source="gguf", quant=option.name, file_bytes=None)


def estimate(facts: ModelFacts, option: QuantOption, n_ctx: int, arch: str, n_gpu_layers: int = 0,
             provider: str = "CPU", safe_types: tuple[str, ...] = ()) -> MemoryEstimate:
    sized = _facts_at(facts, option)
    if option.format == "onnx":
        weights = facts.file_bytes if facts.source == "onnx" and facts.file_bytes else sum(
            tensor_bytes(t) for t in sized.tensors)
        return estimate_onnxruntime(sized, n_ctx, weights_bytes=weights, provider=provider)
    return estimate_llama_cpp(sized, n_ctx, n_gpu_layers=n_gpu_layers, arch=arch,
                              extra_bufts=not _extra_bufts_off(sized, option, safe_types))


def decode_read_bytes(facts: ModelFacts, option: QuantOption, n_gpu_layers: int = 0) -> tuple[int, int]:
    """(host, GPU) weight bytes one decode step reads: every matrix a token passes through; an untied
    embedding table is only gathered from (one row per token). ONNX artifacts carry the figure from their
    graph (facts.decode_read_bytes); an HF folder planned as ONNX counts its weights at the option's bits."""
    sized = _facts_at(facts, option)
    if option.format == "onnx" and facts.decode_read_bytes is not None:
        return facts.decode_read_bytes, 0
    per_layer: dict[int | None, int] = {}
    for t in sized.tensors:
        embed = "token_embd" in t.name or "embed_tokens" in t.name
        if embed and not facts.tie_word_embeddings:
            continue  # an untied embedding table is read one row per token
        per_layer[layer_of(t.name)] = per_layer.get(layer_of(t.name), 0) + tensor_bytes(t)
    first_gpu = facts.num_layers - min(n_gpu_layers, facts.num_layers)
    gpu_bytes = sum(v for k, v in per_layer.items() if k is not None and k >= first_gpu)
    return sum(per_layer.values()) - gpu_bytes, gpu_bytes


def _unrepacked_share(facts: ModelFacts, option: QuantOption, device: Device) -> float:
    """The share of the matrix weights a GGUF at `option` holds in types llama.cpp repacks for this CPU, when the
    host's kernel policy opens that artifact with the extra buffer types off (so they are not repacked); else 0."""
    sized = _facts_at(facts, option)
    if not _extra_bufts_off(sized, option, device.llama_safe_types):
        return 0.0
    total = sum(int(t.shape[0]) * int(t.shape[1]) for t in sized.tensors
                if len(t.shape) == 2 and "token_embd" not in t.name)
    return repacked_params(sized, device.arch) / total if total else 0.0


def _extra_bufts_off(sized: ModelFacts, option: QuantOption, safe_types: tuple[str, ...]) -> bool:
    return bool(({t.dtype.upper() for t in sized.tensors} | {option.main_type.upper()}) & set(safe_types))


def predict_decode_tps(facts: ModelFacts, option: QuantOption, device: Device, threads: int, n_ctx: int,
                       n_gpu_layers: int = 0) -> tuple[float, str]:
    """Tokens/s of decode: the slower of the memory-bandwidth roof and the compute roof, with the reason."""
    host_bytes, gpu_bytes = decode_read_bytes(facts, option, n_gpu_layers)
    kv = kv_cache_bytes(facts, n_ctx // 2)  # average fill over a generation
    host_bw = (device.bandwidth_gbs or 10.0) * 1e9 * BANDWIDTH_EFFICIENCY
    t_mem = (host_bytes + kv * (facts.num_layers - min(n_gpu_layers, facts.num_layers)) / facts.num_layers) / host_bw
    if gpu_bytes and device.gpu is not None:
        gpu_bw = (device.gpu.bandwidth_gbs or 300.0) * 1e9 * BANDWIDTH_EFFICIENCY
        t_mem += (gpu_bytes + kv * min(n_gpu_layers, facts.num_layers) / facts.num_layers) / gpu_bw
    gflops = next((g for feature, g in GFLOPS_PER_CORE if feature in device.isa), 2.0)
    if option.format == "onnx":
        gflops *= ORT_COMPUTE_SHARE
    unpacked = 0.0 if option.format == "onnx" else _unrepacked_share(facts, option, device)
    if unpacked:                # the matrices llama.cpp would repack run on its plain kernels instead
        gflops /= (1.0 - unpacked) + unpacked / UNREPACKED_SHARE
    host_share = host_bytes / max(1, host_bytes + gpu_bytes)
    n = max(1, threads)
    flops = 2 * matmul_params(facts) * host_share
    host_layers = facts.num_layers - min(n_gpu_layers, facts.num_layers)
    t_compute = flops / (gflops * 1e9 * n) + host_layers * (LAYER_OVERHEAD_S[0] + LAYER_OVERHEAD_S[1] / n)
    if t_compute > t_mem:
        return 1.0 / t_compute, (f"compute-bound: {flops / 1e9:.2f} GFLOP/token on {threads} threads x "
                                 f"{gflops:.1f} GFLOP/s + {host_layers} layers x per-layer cost"
                                 + (f" ({unpacked:.0%} of the weights on llama.cpp's plain kernels: extra buffer "
                                    "types off on this host)" if unpacked else ""))
    return 1.0 / t_mem, (f"bandwidth-bound: {format_bytes(host_bytes + gpu_bytes)} read/token at "
                         f"{BANDWIDTH_EFFICIENCY:.0%} of {device.bandwidth_gbs or 10.0:.1f} GB/s")


def matmul_params(facts: ModelFacts) -> int:
    """Weights a decode step multiplies by: all of them but an untied embedding table (gathered, one row)."""
    total = facts.param_count
    if facts.tie_word_embeddings:
        return total
    embed = next((t for t in facts.tensors if "token_embd" in t.name or "embed_tokens" in t.name), None)
    if embed is not None:
        n = 1
        for d in embed.shape:
            n *= d
        return total - n
    return total - facts.vocab_size * facts.hidden_size   # the llama-like estimate counted the table twice


def _gpu_layers(facts: ModelFacts, option: QuantOption, n_ctx: int, device: Device) -> tuple[int, str]:
    """All layers (+1 for the output head) when they fit 90% of free VRAM, else as many blocks as fit."""
    gpu = device.gpu
    if gpu is None:
        return 0, ""
    free = int(gpu.vram_free_bytes * GPU_MEMORY_MARGIN)
    full = estimate(facts, option, n_ctx, device.arch, facts.num_layers + 1, safe_types=device.llama_safe_types)
    if full.device_bytes <= free:
        return facts.num_layers + 1, (f"all {facts.num_layers} layers offloaded to {gpu.name}: "
                                      f"{format_bytes(full.device_bytes)} of {format_bytes(free)} usable VRAM")
    fixed = estimate(facts, option, n_ctx, device.arch, 1, safe_types=device.llama_safe_types).device_bytes
    per_layer = max(1, (full.device_bytes - fixed) // max(1, facts.num_layers))
    layers = max(0, min(facts.num_layers, 1 + (free - fixed) // per_layer)) if free >= fixed else 0
    return layers, (f"partial offload: {layers}/{facts.num_layers} layers on {gpu.name} "
                    f"({format_bytes(full.device_bytes)} needed for all, {format_bytes(free)} usable VRAM)")


def ladder_option(fmt: str, quant: str) -> QuantOption:
    """The ladder entry of (format, quant); one sized from the quant's name when the ladder lacks it."""
    for o in QUANT_LADDER:
        if o.format == fmt and o.name.upper() == quant.upper():
            return o
    bits = next((float(d) + 0.5 for d in quant if d.isdigit()), 4.5)
    return QuantOption(quant.upper() if fmt == "gguf" else quant, fmt,
                       "onnxruntime" if fmt == "onnx" else "llama.cpp", bits, 0.05, quant.upper())


def profile_options(profile: Profile) -> list[QuantOption]:
    """The variants a target profile runs, in the order every planner of edgellm tries them (`plan`, `bundle`,
    `devices --profiles`, samples/edge_build.py): the profile's preferred artifacts in its order, then the
    smaller quants of those formats for models too big for them. The first is the profile's default."""
    preferred = [ladder_option(p.format, p.quant) for p in profile.preferred]
    floor = min(o.bits_per_weight for o in preferred)
    formats = {o.format for o in preferred}
    smaller = [o for o in QUANT_LADDER if o.format in formats and o.bits_per_weight < floor and o not in preferred]
    return preferred + smaller


def profile_default(profile: Profile) -> QuantOption:
    """The variant a profile gets for a model that fits it: its first preferred artifact."""
    return profile_options(profile)[0]


def _options(facts: ModelFacts, device: Device) -> list[QuantOption]:
    if facts.source != "hf":  # a ready artifact: plan what is there
        fmt = "onnx" if facts.source == "onnx" else "gguf"
        match = [o for o in QUANT_LADDER if o.format == fmt and o.name.upper() == (facts.quant or "").upper()]
        return match or [QuantOption(facts.quant or "unknown", fmt, "onnxruntime" if fmt == "onnx" else "llama.cpp",
                                     8 * (facts.file_bytes or 0) / max(1, facts.param_count), 0.0, "")]
    refused = dict(facts.refused_formats)
    if device.profile is not None:
        options = profile_options(device.profile)
    elif device.kind == "cuda" and not device.llama_gpu_offload and device.ort_cuda:
        options = [o for o in QUANT_LADDER if o.format == "onnx"]
    else:
        options = [o for o in QUANT_LADDER if o.format == "gguf"]
    usable = [o for o in options if o.format not in refused]
    if not usable and options:   # the device's formats are refused for this model: the other one, if any
        other = [o for o in QUANT_LADDER if o.format not in refused]
        if not other:
            raise UnsupportedArchitectureError(f"{facts.architecture}: no format can be converted ("
                                               + "; ".join(f"{f}: {why}" for f, why in refused.items()) + ")")
        return other
    return usable


def _format_reason(facts: ModelFacts, option: QuantOption, device: Device) -> str:
    if facts.source != "hf":
        return "the model is already this artifact"
    if device.profile is None:
        return "default for this device"
    if option == profile_default(device.profile):
        return f"profile {device.profile.name}'s default variant"
    if any(option == ladder_option(p.format, p.quant) for p in device.profile.preferred):
        return f"preferred by profile {device.profile.name} (its default does not fit)"
    return f"profile {device.profile.name}'s preferred variants do not fit; the next smaller quant"


def _threads_reason(device: Device, threads: int) -> str:
    if device.profile is not None:
        cap, why = profile_threads(device.profile)
        if threads == cap:
            return why
    return f"thread cap of {device.name}"


def _provider(option: QuantOption, device: Device) -> tuple[str, str]:
    if device.kind == "cuda" and device.gpu is not None:
        if option.format == "gguf" and device.llama_gpu_offload:
            return "CUDA", "llama.cpp was built with GPU offload"
        if option.format == "onnx" and device.ort_cuda:
            return "CUDAExecutionProvider", "onnxruntime lists CUDAExecutionProvider"
        return ("CPU" if option.format == "gguf" else "CPUExecutionProvider",
                f"{option.runtime} has no CUDA support in this install; running on the CPU")
    return ("CPU" if option.format == "gguf" else "CPUExecutionProvider"), f"device {device.name} is CPU-only"


def plan_model(facts: ModelFacts, device: Device, budgets: Budgets = Budgets(), model_name: str = "model",
               runtime_refusals: Mapping[tuple[str, str], str] | None = None) -> Plan:
    """The best-quality plan that fits memory and meets the speed and quality budgets.

    runtime_refusals: (format, QUANT) -> why the target's runtime cannot run that variant (the caller computes it
    from the artifact's or the recipe's runtime requirements and the profile's `runtimes`); such a variant is
    skipped with its reason, and BackendUnavailableError names every reason when no variant is left."""
    refusals = {(f, q.upper()): why for (f, q), why in (runtime_refusals or {}).items()}
    runtime_rejected: list[str] = []
    limit = device.memory_bytes if budgets.max_memory is None else min(device.memory_bytes, budgets.max_memory)
    limit_reason = (f"memory limit {format_bytes(limit)}: " + (
        f"--max-memory {format_bytes(budgets.max_memory)}" if budgets.max_memory and budgets.max_memory <= device.memory_bytes
        else f"{device.name} allows {format_bytes(device.memory_bytes)}"))
    if budgets.n_ctx:
        contexts = [budgets.n_ctx]
    else:
        top = min(facts.max_context, DEFAULT_CONTEXT)
        contexts = [top] + [c for c in CONTEXT_STEPS if c < top]
    rejected: list[str] = []
    smallest: tuple[int, str] | None = None
    passes = (True, False) if device.kind == "cuda" else (False,)  # on a GPU, prefer a full offload
    for n_ctx, require_full in ((c, r) for c in contexts for r in passes):
        for option in _options(facts, device):
            if budgets.max_quality_loss is not None and option.quality_loss > budgets.max_quality_loss:
                rejected.append(f"{option.name}: quality loss {option.quality_loss:.2%} > budget "
                                f"{budgets.max_quality_loss:.2%}")
                continue
            why_not = refusals.get((option.format, option.name.upper()))
            if why_not is not None:
                if not any(r.startswith(f"{option.format} {option.name}:") for r in runtime_rejected):
                    runtime_rejected.append(f"{option.format} {option.name}: {why_not}")
                continue
            provider, provider_reason = _provider(option, device)
            gpu_layers, gpu_reason = (0, "")
            if provider == "CUDA":
                gpu_layers, gpu_reason = _gpu_layers(facts, option, n_ctx, device)
                if require_full and gpu_layers <= facts.num_layers:
                    continue
            mem = estimate(facts, option, n_ctx, device.arch, gpu_layers, provider, device.llama_safe_types)
            if smallest is None or mem.host_bytes < smallest[0]:
                smallest = (mem.host_bytes, f"{option.name} at n_ctx={n_ctx}")
            if mem.host_bytes > limit:
                rejected.append(f"{option.name} at n_ctx={n_ctx}: needs {format_bytes(mem.host_bytes)} > "
                                f"{format_bytes(limit)}")
                continue
            threads = device.threads
            tps, tps_reason = predict_decode_tps(facts, option, device, threads, n_ctx, gpu_layers)
            if budgets.min_tps is not None and tps < budgets.min_tps:
                rejected.append(f"{option.name}: predicted {tps:.1f} tokens/s < budget {budgets.min_tps:.1f}")
                continue
            reasons = [
                f"format {option.format} / runtime {option.runtime}: {_format_reason(facts, option, device)}",
                f"quant {option.name}: " + ("first of the profile's choices that fits" if device.profile else
                                            "highest quality that fits")
                + f" ({option.bits_per_weight:.2f} bits/weight, ~{option.quality_loss:.2%} perplexity loss)",
                f"provider {provider}: {provider_reason}",
                f"threads {threads}: {_threads_reason(device, threads)}",
                f"n_ctx {n_ctx}: " + ("as requested" if budgets.n_ctx else
                                      f"largest of the model's {facts.max_context} up to {DEFAULT_CONTEXT} that fits"),
                limit_reason, f"memory estimate {mem.describe()}",
                f"decode ~{tps:.1f} tokens/s, {tps_reason}",
            ]
            if gpu_reason:
                reasons.insert(3, f"n_gpu_layers {gpu_layers}: {gpu_reason}")
            reasons += [f"no {fmt}: {why}" for fmt, why in facts.refused_formats]
            reasons += [f"refused {r} (the target's runtime cannot run it)" for r in runtime_rejected]
            reasons += [f"rejected {r}" for r in rejected[:8]]
            reasons += [f"note: {r}" for r in device.reasons]
            return Plan(model_name, device, option.format, option.name, option.runtime, provider, threads,
                        gpu_layers, n_ctx, mem, limit, tps, option.quality_loss, facts.source == "hf", tuple(reasons))
    if smallest is None and runtime_rejected:
        raise BackendUnavailableError(
            f"{device.name}'s runtimes cannot run any variant of {model_name}: " + "; ".join(runtime_rejected),
            "update the target's runtime (the profile's `runtimes`), or convert to a format/recipe it runs")
    if smallest is not None and smallest[0] > limit:
        raise InsufficientMemoryError(
            f"{model_name} does not fit {device.name}: the smallest plan ({smallest[1]}) needs "
            f"{format_bytes(smallest[0])} but {format_bytes(limit)} is available")
    raise BudgetError(
        f"no plan for {model_name} on {device.name} meets the budgets (available memory "
        f"{format_bytes(limit)}): " + "; ".join(rejected[-6:]),
        hint="relax --min-tps or --max-quality-loss, or allow more memory")
