"""Devices room: detection, profiles, memory estimates and plans, as plain data. Knows no converter or runtime."""
from .budgets import parse_memory, parse_quality_loss, parse_speed
from .cpu import detect_cpu
from .cuda import detect_cuda
from .memory import MemoryEstimate, estimate_llama_cpp, estimate_onnxruntime
from .planner import Budgets, Plan, plan_model
from .profiles import get_profile, load_profiles
from .threads import ThreadChoice, pick_threads
from .types import CPUInfo, CUDAInventory, Device, GPUInfo, ModelFacts, Profile, TensorFacts

__all__ = [
    "Budgets", "CPUInfo", "CUDAInventory", "Device", "GPUInfo", "MemoryEstimate", "ModelFacts", "Plan", "Profile",
    "TensorFacts", "ThreadChoice", "detect_cpu", "detect_cuda", "estimate_llama_cpp", "estimate_onnxruntime",
    "get_profile", "load_profiles", "parse_memory", "parse_quality_loss", "parse_speed", "pick_threads",
    "plan_model",
]
