"""Plain data the devices room answers with. No logic beyond small derived properties."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class CacheInfo:
    level: int
    kind: str  # "Data" | "Instruction" | "Unified"
    size_bytes: int
    shared_by_cpus: int = 1


@dataclass(frozen=True)
class CPUInfo:
    model: str
    arch: str  # platform.machine(): x86_64, aarch64, ...
    physical_cores: int
    logical_cores: int
    isa: tuple[str, ...]  # normalized feature names, e.g. ("avx2", "avx512f", "avx512_vnni", "f16c")
    caches: tuple[CacheInfo, ...]
    ram_total_bytes: int
    ram_available_bytes: int
    cgroup_version: str | None = None  # "v2" | "v1" | None
    cgroup_memory_limit_bytes: int | None = None
    cgroup_cpu_limit: float | None = None  # CPUs allowed by cpu.max / cfs quota
    affinity_cpus: int | None = None  # len(os.sched_getaffinity(0)) where available

    @property
    def usable_cores(self) -> int:
        """Physical cores, capped by the CPU affinity mask and a cgroup CPU quota."""
        cores = self.physical_cores
        if self.affinity_cpus:
            cores = min(cores, self.affinity_cpus)
        if self.cgroup_cpu_limit:
            cores = min(cores, max(1, int(self.cgroup_cpu_limit)))
        return max(1, cores)

    @property
    def usable_memory_bytes(self) -> int:
        """Available RAM, capped by the cgroup memory limit."""
        if self.cgroup_memory_limit_bytes:
            return min(self.ram_available_bytes, self.cgroup_memory_limit_bytes)
        return self.ram_available_bytes


@dataclass(frozen=True)
class GPUInfo:
    index: int
    name: str
    vram_total_bytes: int
    vram_free_bytes: int
    compute_capability: tuple[int, int]
    bandwidth_gbs: float | None = None  # from NVML bus width x memory clock, when readable


@dataclass(frozen=True)
class CUDAInventory:
    """What CUDA offers this process. `reason` says why `gpus` is empty (or notes a partial failure)."""
    gpus: tuple[GPUInfo, ...] = ()
    reason: str = ""
    driver_version: str | None = None
    ort_cuda: bool = False  # onnxruntime lists CUDAExecutionProvider
    ort_reason: str = ""
    llama_gpu_offload: bool = False  # llama.cpp built with a GPU backend
    llama_reason: str = ""


@dataclass(frozen=True)
class PowerEnvelope:
    idle_w: float
    active_w_per_big_core: float
    active_w_per_little_core: float
    max_w: float


@dataclass(frozen=True)
class PreferredArtifact:
    format: Literal["gguf", "onnx"]
    quant: str
    runtime: str  # "llama.cpp" | "onnxruntime"
    provider: str  # e.g. "CPU", "CPUExecutionProvider", "CUDA"
    note: str = ""


@dataclass(frozen=True)
class ProfileGPU:
    name: str
    memory_shared: bool
    compute_capability: tuple[int, int] | None
    bandwidth_gbs: float


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    arch: str
    cores_big: int
    cores_little: int
    threads: int  # thread cap an app should use (big cores, usually)
    ram_bytes: int  # installed RAM
    app_memory_bytes: int  # what one app may use before the OS kills it / the system swaps
    bandwidth_gbs: float
    isa: tuple[str, ...]
    power: PowerEnvelope
    preferred: tuple[PreferredArtifact, ...]
    gpu: ProfileGPU | None = None
    # runtime distribution -> the version the target has ("onnxruntime": "1.22.0", "llama-cpp-python": "0.3.36"),
    # for targets whose runtime is fixed (a system package, an app's bundled library); empty: the edge image
    # installs what each variant needs. A variant needing more is refused by the planner with the reason.
    runtimes: tuple[tuple[str, str], ...] = ()

    @property
    def runtime_versions(self) -> dict[str, str]:
        return dict(self.runtimes)


@dataclass(frozen=True)
class Device:
    """Where a model will run: the caps the planner and the runtimes must honour."""
    name: str  # "cpu", "cuda:0", "profile:raspberry-pi-5"
    kind: Literal["cpu", "cuda"]
    threads: int  # thread cap
    memory_bytes: int  # host memory cap for the model process
    isa: tuple[str, ...]
    arch: str
    bandwidth_gbs: float | None = None  # host memory bandwidth (measured, or the profile's)
    gpus: tuple[GPUInfo, ...] = ()
    ort_cuda: bool = False
    llama_gpu_offload: bool = False
    profile: Profile | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)
    # GGML types whose models this host's llama.cpp opens with extra buffer types off (known kernel defects,
    # kernel probe): such a model gets no repacked weight copy
    llama_safe_types: tuple[str, ...] = ()

    @property
    def gpu(self) -> GPUInfo | None:
        return self.gpus[0] if self.gpus else None

    @property
    def max_threads(self) -> int:
        """The thread cap, under the name edgellm.load reads."""
        return self.threads

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class TensorFacts:
    name: str
    shape: tuple[int, ...]  # as the file stores it (GGUF: ne order, innermost first; HF: row-major)
    dtype: str  # a GGML type name ("Q4_K", "F32") or a safetensors dtype ("BF16", "F16", "F32")


@dataclass(frozen=True)
class ModelFacts:
    """What the planner needs to know about a model, whatever file it came from."""
    architecture: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_context: int
    tie_word_embeddings: bool = False
    tensors: tuple[TensorFacts, ...] = ()
    source: Literal["hf", "gguf", "onnx"] = "hf"
    quant: str | None = None  # the quant of a ready artifact ("Q4_K_M", "int4"); None for an HF folder
    file_bytes: int | None = None  # size of the ready artifact's weights file(s)
    # bytes of a float embedding table stored apart from the quantized weights; 0 when the table is itself
    # quantized (ONNX GatherBlockQuantized, e.g. shared with the LM head); None when unknown
    embedding_bytes: int | None = None
    # --- per-layer memory facts (the family's, read from config.json or GGUF metadata) ---------------------
    # KV heads of each layer; 0 marks a layer without a KV cache (LFM2's convolutions, Qwen3.5's DeltaNet).
    # Empty: every layer has num_kv_heads.
    layer_kv_heads: tuple[int, ...] = ()
    sliding_window: int = 0                  # tokens a sliding-window layer attends over (0: none)
    swa_layers: tuple[bool, ...] = ()        # True where a layer is sliding-window (llama.cpp's SWA cache)
    recurrent_state_bytes: int = 0           # F32 state of the recurrent layers, per sequence (all layers)
    # --- an HF folder's artifacts as the converter will write them (predicted, nothing converted) -----------
    # (quant name, the GGUF's tensors with their predicted GGML types): fallbacks and recipe mixes included
    layouts: tuple[tuple[str, tuple[TensorFacts, ...]], ...] = ()
    header_bytes: int = 0                    # predicted GGUF metadata bytes (vocabulary, merges, template)
    # weight bytes a decode step reads (ONNX: initializers feeding matmuls; a table only gathered from is
    # read one row per token); None: derived from `tensors`
    decode_read_bytes: int | None = None
    refused_formats: tuple[tuple[str, str], ...] = ()   # (format, why the converter refuses it for this model)
    # entries of the tokenizer the runtime loads (tokenizer.json's vocabulary + added tokens); None: vocab_size.
    # They differ when the embedding is padded past the tokenizer (a random checkpoint's byte-level tokenizer)
    tokenizer_entries: int | None = None

    def kv_heads_of(self, layer: int) -> int:
        return self.layer_kv_heads[layer] if layer < len(self.layer_kv_heads) else self.num_kv_heads

    def is_swa(self, layer: int) -> bool:
        return bool(self.sliding_window) and layer < len(self.swa_layers) and self.swa_layers[layer]

    def layout(self, quant: str) -> tuple[TensorFacts, ...] | None:
        return next((t for q, t in self.layouts if q.upper() == quant.upper()), None)

    @property
    def param_count(self) -> int:
        if self.tensors:
            total = 0
            for t in self.tensors:
                n = 1
                for d in t.shape:
                    n *= d
                total += n
            return total
        # llama-like estimate when no tensor list is known
        h, f, kv = self.hidden_size, self.intermediate_size, self.num_kv_heads * self.head_dim
        per_layer = h * (self.num_heads * self.head_dim) * 2 + h * kv * 2 + 3 * h * f + 2 * h
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embed + h
