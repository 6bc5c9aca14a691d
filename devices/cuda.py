"""CUDA inventory through NVML, plus what the runtimes were built with.

Nothing here raises on a host without a GPU: a missing NVML, no device or a broken driver yields an
empty inventory with a reason. NVML, onnxruntime and llama.cpp are imported lazily, inside the call.
Tests pass `nvml=` (a module-like fake of pynvml) and the two probes to simulate an inventory.
"""
from __future__ import annotations

import logging
from types import ModuleType
from typing import Any, Callable

from .types import CUDAInventory, GPUInfo

log = logging.getLogger(__name__)

NVML_CLOCK_MEM = 2  # pynvml.NVML_CLOCK_MEM


def _load_nvml() -> ModuleType | None:
    try:
        import pynvml  # from nvidia-ml-py
    except ImportError:
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpu_bandwidth_gbs(nvml: Any, handle: Any) -> float | None:
    """Peak bandwidth from bus width (bits) x max memory clock (MHz) x 2 (double data rate)."""
    try:
        bus_bits = nvml.nvmlDeviceGetMemoryBusWidth(handle)
        mem_mhz = nvml.nvmlDeviceGetMaxClockInfo(handle, NVML_CLOCK_MEM)
    except Exception:  # older drivers lack these calls; bandwidth is then unknown, not fatal
        return None
    return round(bus_bits / 8 * mem_mhz * 2 / 1000.0, 1) if bus_bits and mem_mhz else None


def query_nvml(nvml: Any | None = None) -> tuple[tuple[GPUInfo, ...], str, str | None]:
    """(gpus, reason, driver version). `nvml` defaults to pynvml; pass a fake to simulate."""
    nvml = nvml if nvml is not None else _load_nvml()
    if nvml is None:
        return (), "NVML not available (pip install nvidia-ml-py); no CUDA GPU will be used", None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ... : all mean "no usable GPU"
        return (), f"NVML could not initialise ({type(exc).__name__}: {exc}); no CUDA GPU will be used", None
    try:
        driver = None
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception:
            pass
        count = nvml.nvmlDeviceGetCount()
        gpus = []
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(GPUInfo(index=index, name=_text(nvml.nvmlDeviceGetName(handle)),
                                vram_total_bytes=int(memory.total), vram_free_bytes=int(memory.free),
                                compute_capability=(int(major), int(minor)),
                                bandwidth_gbs=_gpu_bandwidth_gbs(nvml, handle)))
        reason = "" if gpus else "NVML found no NVIDIA GPU"
        return tuple(gpus), reason, driver
    except Exception as exc:
        return (), f"NVML query failed ({type(exc).__name__}: {exc}); no CUDA GPU will be used", None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def ort_has_cuda() -> tuple[bool, str]:
    try:
        import onnxruntime
    except ImportError:
        return False, "onnxruntime not installed (pip install 'edgellm[onnx]')"
    providers = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in providers:
        return True, ""
    return False, f"onnxruntime providers are {', '.join(providers)} (install onnxruntime-gpu for CUDA)"


def llama_has_gpu_offload() -> tuple[bool, str]:
    try:
        import llama_cpp
    except ImportError:
        return False, "llama-cpp-python not installed"
    try:
        if bool(llama_cpp.llama_supports_gpu_offload()):
            return True, ""
    except Exception as exc:  # an old build without the symbol
        return False, f"llama.cpp GPU offload unknown ({exc})"
    return False, "llama-cpp-python was built without a GPU backend (rebuild with CMAKE_ARGS=-DGGML_CUDA=on)"


def detect_cuda(nvml: Any | None = None,
                ort_probe: Callable[[], tuple[bool, str]] = ort_has_cuda,
                llama_probe: Callable[[], tuple[bool, str]] = llama_has_gpu_offload) -> CUDAInventory:
    """The CUDA inventory of this host; every part is injectable for simulated tests."""
    gpus, reason, driver = query_nvml(nvml)
    ort_cuda, ort_reason = ort_probe()
    llama_gpu, llama_reason = llama_probe()
    inventory = CUDAInventory(gpus=gpus, reason=reason, driver_version=driver, ort_cuda=ort_cuda,
                              ort_reason=ort_reason, llama_gpu_offload=llama_gpu, llama_reason=llama_reason)
    log.debug("CUDA inventory %s", inventory)
    return inventory
