"""Memory estimator: weights + KV cache + compute buffers + runtime overhead + interpreter baseline.

Estimates are of the *process total* (what peak RSS / VmHWM shows), so the Python interpreter and the
imported runtime are explicit named terms. Constants marked "calibrated" were measured on this project's
test machine (x86-64, llama-cpp-python 0.3.x / onnxruntime 1.32, SmolLM2-135M; see
tests/devices/test_memory_real.py); "fitted" ones were chosen to match several measurements (the points are
listed next to them); "uncalibrated" ones come from upstream documentation and could not be measured here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from edgellm.errors import InsufficientMemoryError

from .budgets import format_bytes
from .types import ModelFacts, TensorFacts

MiB = 1 << 20
Where = Literal["host", "device"]

# --- calibrated on the test machine (CPython 3.11, numpy 2, llama-cpp-python 0.3.x) ---------------------
# RSS of `python -c "import llama_cpp"`: interpreter + numpy + libllama/libggml text pages.
LLAMA_CPP_INTERPRETER_BASELINE = 43 * MiB
# Anonymous memory llama.cpp and the bindings hold besides weights/KV/compute: vocabulary tables, BPE merge
# map, token-piece cache, scheduler. 19.5 MiB measured for a 49152-token vocabulary; the split into a fixed
# part and a per-vocabulary-entry part is an assumption (one vocabulary size measured).
LLAMA_CPP_FIXED_OVERHEAD = 7 * MiB
LLAMA_CPP_BYTES_PER_VOCAB_ENTRY = 266
# Touched compute memory per token of a batch: ~ (4 x hidden + 2 x ffn) float32 activations live at once.
ACTIVATION_FLOATS = (4, 2)  # (per hidden unit, per ffn unit)
# --- onnxruntime CPU, calibrated on the test machine (CPython 3.11, onnxruntime 1.32, SmolLM2-135M int4) ------
# RSS after importing what edgellm.load imports for an ONNX artifact: interpreter + numpy + onnxruntime + onnx
# + tokenizers + edgellm. Measured 63.5 MiB in a venv whose shared libraries are partly out of the page cache and
# 77.5 MiB in a freshly installed one (same library versions; the file-backed RSS of the libraries differs by
# 14 MiB, a page-cache effect); a plan takes the higher.
ORT_INTERPRETER_BASELINE = 77 * MiB + MiB // 2
# What edgellm.load adds besides the tokenizer and the weights: the InferenceSession (graph, kernels, allocation
# plan), libonnxruntime pages touched while loading, the rest of the load path including device="auto"'s probe
# (it imports llama_cpp: ~12 MiB; device="cpu" skips it). Measured as the load with MatMulNBits prepacking
# disabled (weights then stay mapped and untouched) minus imports and tokenizer: 40.4 MiB (runs vary +-4 MiB).
ORT_RUNTIME_FIXED = 40 * MiB + 400 * 1024
# tokenizers.Tokenizer of tokenizer.json plus edgellm's parsed copy of it (special tokens, byte table): 31.7 MiB
# for a 49152-entry byte-level BPE. Per vocabulary entry is an assumption (one vocabulary size measured).
ORT_TOKENIZER_BYTES_PER_VOCAB_ENTRY = 676
# FITTED. Resident weights per stored byte of the non-embedding initializers (MatMulNBits int4 blocks + int8 LM
# head + norms + rope caches): the CPU EP prepacks MatMulNBits into MLAS' layout (packed blocks + fp32 scales +
# block sums) in anonymous memory and the mapped model.onnx.data keeps the pages it read. Measured: prepacking
# on minus off = 141.0 MiB for 98.3 MiB stored -> 1.43. One artifact (int4 + int8 head, block 32) measured.
ORT_PREPACK_FACTOR = 1.43
# FITTED. The CPU arena's touched high-water mark during prefill, per prompt token, in float32 vectors of
# (hidden + ffn) width. GroupQueryAttention's CPU kernel is a tiled flash attention in onnxruntime 1.32 (no
# heads x tokens x tokens score buffer), so this is linear in the prompt. Arena minus nothing else, measured at
# 200/500/1000/2000/4000/8150 prompt tokens: 7.2/13.8/47.5/105/222/469 MiB; 7 vectors give
# 11.3/28.2/56.4/113/226/460 MiB (the arena grows in chunks, so small prompts touch less than the line).
ORT_ACTIVATION_VECTORS = 7
# edgellm's onnxruntime runtime rounds the KV capacity (prompt + max_tokens) up to this many positions on CPU
# (runtimes/onnxruntime.py imports this constant: one number for the runtime and its estimate).
ORT_KV_ROUND = 64
PAGE = 4096
# llama.cpp rounds the context (and each KV cache) up to 256 cells
LLAMA_CTX_PAD = 256
# llama.cpp's library default is swa_full=true (sliding-window layers hold the whole context like the global ones);
# edgellm's llama.cpp runtime passes swa_full=False unless speculative decoding is on (runtimes/options.py), as
# llama.cpp's server does: the sliding layers hold PAD(n_swa + n_ubatch, 256) cells.
LLAMA_SWA_FULL = False
# --- uncalibrated (no GPU here): upstream figures --------------------------------------------------------
CUDA_CONTEXT_DEVICE_BYTES = 300 * MiB  # CUDA context + cuBLAS workspace on the GPU
CUDA_CONTEXT_HOST_BYTES = 250 * MiB  # libcudart/cublas pages and pinned staging buffers in the process

# safetensors / numpy dtypes -> bytes per element
_PLAIN_DTYPE_BYTES: dict[str, float] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "INT4": 0.5, "UINT4": 0.5,
}
# llama.cpp repacks these types into interleaved CPU layouts at load (an extra anonymous copy; the mmapped
# original stays resident). Token embeddings are never repacked (they feed get_rows, not matmul).
REPACKED_TYPES: dict[str, tuple[str, ...]] = {
    "x86_64": ("Q4_0", "Q4_K", "IQ4_NL"),
    "aarch64": ("Q4_0", "IQ4_NL", "Q4_K"),
}


@lru_cache(maxsize=None)
def _ggml_sizes() -> dict[str, tuple[int, int]]:
    import gguf  # lazy: reading the table is the only use

    return {t.name: size for t, size in gguf.GGML_QUANT_SIZES.items()}


def bytes_per_element(dtype: str) -> float:
    """Average bytes per element of a GGML type (block types included) or a safetensors dtype."""
    name = dtype.upper()
    if name.startswith("BPW:"):  # an average bits-per-weight, used when planning a quant not yet produced
        return float(name[4:]) / 8
    sizes = _ggml_sizes()
    if name in sizes:
        block, type_size = sizes[name]
        return type_size / block
    if name in _PLAIN_DTYPE_BYTES:
        return _PLAIN_DTYPE_BYTES[name]
    raise ValueError(f"unknown tensor type {dtype!r}; known: {', '.join(sorted({*sizes, *_PLAIN_DTYPE_BYTES}))}")


def tensor_bytes(tensor: TensorFacts) -> int:
    """Stored bytes of one tensor (block types: whole blocks per row)."""
    name = tensor.dtype.upper()
    n = 1
    for d in tensor.shape:
        n *= d
    sizes = _ggml_sizes()
    if name in sizes and tensor.shape:
        block, type_size = sizes[name]
        rows = n // tensor.shape[0]
        return rows * -(-tensor.shape[0] // block) * type_size
    return int(n * bytes_per_element(name))


@dataclass(frozen=True)
class MemoryTerm:
    name: str
    bytes: int
    where: Where
    note: str


@dataclass(frozen=True)
class MemoryEstimate:
    runtime: str
    n_ctx: int
    terms: tuple[MemoryTerm, ...]

    @property
    def host_bytes(self) -> int:
        return sum(t.bytes for t in self.terms if t.where == "host")

    @property
    def device_bytes(self) -> int:
        return sum(t.bytes for t in self.terms if t.where == "device")

    @property
    def total_bytes(self) -> int:
        return self.host_bytes + self.device_bytes

    def term(self, name: str, where: Where | None = None) -> int:
        return sum(t.bytes for t in self.terms if t.name == name and (where is None or t.where == where))

    def describe(self) -> str:
        parts = [f"{t.name}{'@gpu' if t.where == 'device' else ''} {format_bytes(t.bytes)}" for t in self.terms]
        return f"{format_bytes(self.total_bytes)} = " + " + ".join(parts)

    def check_fits(self, host_available: int, device_available: int | None = None, what: str = "model") -> None:
        """Raise InsufficientMemoryError naming required and available memory when it does not fit."""
        if self.host_bytes > host_available:
            raise InsufficientMemoryError(
                f"{what} needs {format_bytes(self.host_bytes)} of host memory at n_ctx={self.n_ctx} "
                f"but {format_bytes(host_available)} is available ({self.describe()})")
        if self.device_bytes and device_available is not None and self.device_bytes > device_available:
            raise InsufficientMemoryError(
                f"{what} needs {format_bytes(self.device_bytes)} of GPU memory at n_ctx={self.n_ctx} "
                f"but {format_bytes(device_available)} is free")


def layer_of(name: str) -> int | None:
    """Block index of a tensor name (GGUF `blk.N.` or HF `layers.N.`), None for global tensors."""
    for marker in ("blk.", "layers.", "layer."):
        at = name.find(marker)
        if at >= 0:
            digits = name[at + len(marker):].split(".", 1)[0]
            if digits.isdigit():
                return int(digits)
    return None


def kv_cache_bytes(facts: ModelFacts, n_ctx: int, type_k: str = "F16", type_v: str = "F16",
                   layers: int | None = None) -> int:
    """K and V of `n_ctx` positions in the first `layers` layers (default all) that hold a KV cache, each at its
    element size (q8_0/q4_0 allowed): kv_heads x head_dim per layer, 0 for recurrent/convolution layers."""
    count = facts.num_layers if layers is None else layers
    return sum(_layer_kv_bytes(facts, i, n_ctx, type_k, type_v) for i in range(min(count, facts.num_layers)))


def _layer_kv_bytes(facts: ModelFacts, layer: int, cells: int, type_k: str, type_v: str) -> int:
    width = facts.kv_heads_of(layer) * facts.head_dim
    if not width or not cells:
        return 0
    return tensor_bytes(TensorFacts("k", (width, cells), type_k)) + tensor_bytes(TensorFacts("v", (width, cells), type_v))


def llama_kv_cells(facts: ModelFacts, n_ctx: int, layer: int, *, swa_full: bool = LLAMA_SWA_FULL,
                   n_ubatch: int = 512, n_seq: int = 1) -> int:
    """Cells llama.cpp allocates for one layer: the context rounded up to 256; a sliding-window layer with
    swa_full off gets only PAD(min(ctx, n_swa x n_seq + n_ubatch), 256) (llama_kv_cache_iswa)."""
    size = _pad(n_ctx, LLAMA_CTX_PAD)
    if facts.is_swa(layer) and not swa_full:
        return min(size, _pad(min(size, facts.sliding_window * n_seq + n_ubatch), LLAMA_CTX_PAD))
    return size


def llama_kv_bytes(facts: ModelFacts, n_ctx: int, layers: range, type_k: str = "F16", type_v: str = "F16", *,
                   swa_full: bool = LLAMA_SWA_FULL, n_ubatch: int = 512) -> int:
    """KV bytes llama.cpp allocates for `layers` (per-layer heads, sliding windows, recurrent layers skipped)."""
    return sum(_layer_kv_bytes(facts, i, llama_kv_cells(facts, n_ctx, i, swa_full=swa_full, n_ubatch=n_ubatch),
                               type_k, type_v) for i in layers)


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def compute_bytes(facts: ModelFacts, n_ctx: int, n_ubatch: int = 512, prompt_tokens: int | None = None,
                  flash_attn: bool = False) -> int:
    """Touched compute-buffer memory of the largest batch.

    prompt_tokens=None is the worst case: a full micro-batch evaluated against a full context. Otherwise a
    prompt of that many tokens evaluated from an empty cache (KV view padded to 256 cells, as llama.cpp does).
    """
    if prompt_tokens is None:
        tokens, n_kv = min(n_ubatch, n_ctx), n_ctx
    else:
        tokens, n_kv = min(prompt_tokens, n_ubatch), min(n_ctx, _pad(prompt_tokens, 256))
    per_hidden, per_ffn = ACTIVATION_FLOATS
    activations = tokens * (per_hidden * facts.hidden_size + per_ffn * facts.intermediate_size) * 4
    if flash_attn:
        attention = tokens * facts.num_heads * facts.head_dim * 4 * 2
    else:
        attention = n_kv * tokens * facts.num_heads * 4  # KQ scores (softmax runs in place)
    logits = facts.vocab_size * 4  # one output row: llama-cpp-python keeps logits of the last token only
    return activations + attention + logits


def weights_split(facts: ModelFacts, n_gpu_layers: int) -> tuple[int, int]:
    """(host bytes, device bytes) of the weights with the last `n_gpu_layers` blocks offloaded.

    llama.cpp offloads blocks from the end; the output head goes with a full offload (n_gpu_layers > layers);
    token embeddings stay on the host.
    """
    host = device = 0
    first_gpu = facts.num_layers - min(n_gpu_layers, facts.num_layers)
    for t in facts.tensors:
        size = tensor_bytes(t)
        layer = layer_of(t.name)
        on_gpu = (layer is not None and layer >= first_gpu) or (
            layer is None and n_gpu_layers > facts.num_layers and "token_embd" not in t.name
            and "embed_tokens" not in t.name)
        if on_gpu:
            device += size
        else:
            host += size
    return host, device


def _repacked(facts: ModelFacts, arch: str, n_gpu_layers: int = 0) -> list[TensorFacts]:
    """The CPU-side matrices llama.cpp repacks at load for `arch` (when its extra buffer types are on)."""
    types = REPACKED_TYPES.get(arch, ())
    first_gpu = facts.num_layers - min(n_gpu_layers, facts.num_layers)
    out = []
    for t in facts.tensors:
        layer = layer_of(t.name)
        if (t.dtype.upper() in types and "token_embd" not in t.name and len(t.shape) == 2
                and t.shape[1] % 8 == 0 and (layer is None or layer < first_gpu)):
            out.append(t)
    return out


def repacked_bytes(facts: ModelFacts, arch: str, n_gpu_layers: int = 0) -> int:
    return sum(tensor_bytes(t) for t in _repacked(facts, arch, n_gpu_layers))


def repacked_params(facts: ModelFacts, arch: str) -> int:
    return sum(int(t.shape[0]) * int(t.shape[1]) for t in _repacked(facts, arch))


def _kv_note(facts: ModelFacts, n_ctx: int, type_k: str, type_v: str, swa_full: bool, n_ubatch: int) -> str:
    cells = _pad(n_ctx, LLAMA_CTX_PAD)
    kv_layers = [i for i in range(facts.num_layers) if facts.kv_heads_of(i)]
    note = f"K {type_k} / V {type_v}, {len(kv_layers)} layers x {cells} cells"
    swa = [i for i in kv_layers if facts.is_swa(i)]
    if swa:
        small = llama_kv_cells(facts, n_ctx, swa[0], swa_full=swa_full, n_ubatch=n_ubatch)
        note += (f" ({len(swa)} sliding-window layers of {facts.sliding_window}: "
                 + ("full-size SWA cache" if swa_full else f"{small} cells") + ")")
    return note


def estimate_llama_cpp(facts: ModelFacts, n_ctx: int, *, n_gpu_layers: int = 0, arch: str = "x86_64",
                       type_k: str = "F16", type_v: str = "F16", n_ubatch: int = 512,
                       prompt_tokens: int | None = None, flash_attn: bool = False,
                       baseline_bytes: int = LLAMA_CPP_INTERPRETER_BASELINE,
                       extra_bufts: bool = True, swa_full: bool = LLAMA_SWA_FULL) -> MemoryEstimate:
    """Peak process memory of llama-cpp-python serving a GGUF (facts.tensors hold GGML types).

    extra_bufts=False: the model is opened with llama.cpp's extra buffer types off (the safe kernel switch),
    so no repacked copy of the weights is made: the estimate follows the kernel path the load will take.
    KV: per layer (kv heads x head_dim; none for recurrent layers) over the context rounded to 256 cells;
    sliding-window layers hold the whole context unless swa_full is off. Recurrent layers (LFM2's short
    convolutions, Qwen3.5's DeltaNet) hold an F32 state per sequence instead."""
    if not facts.tensors:
        raise ValueError("estimate_llama_cpp needs the per-tensor types (ModelFacts.tensors)")
    gpu_layers = min(n_gpu_layers, facts.num_layers)
    first_gpu = facts.num_layers - gpu_layers
    w_host, w_dev = weights_split(facts, n_gpu_layers)
    kv_dev = llama_kv_bytes(facts, n_ctx, range(first_gpu, facts.num_layers), type_k, type_v, swa_full=swa_full,
                            n_ubatch=n_ubatch)
    kv_host = llama_kv_bytes(facts, n_ctx, range(first_gpu), type_k, type_v, swa_full=swa_full, n_ubatch=n_ubatch)
    compute = compute_bytes(facts, _pad(n_ctx, LLAMA_CTX_PAD), n_ubatch, prompt_tokens, flash_attn)
    runtime = LLAMA_CPP_FIXED_OVERHEAD + LLAMA_CPP_BYTES_PER_VOCAB_ENTRY * facts.vocab_size
    if facts.file_bytes and not gpu_layers:  # the mapped header (vocabulary, merges) is resident too
        w_host += max(0, facts.file_bytes - w_host)
    terms = [
        MemoryTerm("interpreter", baseline_bytes, "host", "python + numpy + llama_cpp import (calibrated)"),
        MemoryTerm("weights", w_host, "host", "mmapped GGUF tensors kept on the CPU"),
    ]
    repack = repacked_bytes(facts, arch, n_gpu_layers) if extra_bufts else 0
    if repack:
        terms.append(MemoryTerm("weights_repacked", repack, "host", f"CPU repack copy for {arch} kernels"))
    if kv_host:
        terms.append(MemoryTerm("kv_cache", kv_host, "host", _kv_note(facts, n_ctx, type_k, type_v, swa_full,
                                                                       n_ubatch)))
    if facts.recurrent_state_bytes:
        terms.append(MemoryTerm("recurrent_state", facts.recurrent_state_bytes, "host" if not gpu_layers else "device",
                                "F32 conv/SSM state of the recurrent layers, one sequence"))
    terms.append(MemoryTerm("runtime", runtime, "host", "vocab tables, scheduler (calibrated)"))
    if gpu_layers:
        terms += [MemoryTerm("weights", w_dev, "device", f"{gpu_layers} offloaded blocks"),
                  MemoryTerm("kv_cache", kv_dev, "device", f"K {type_k} / V {type_v}"),
                  MemoryTerm("compute", compute, "device", "CUDA compute buffer"),
                  MemoryTerm("cuda_context", CUDA_CONTEXT_DEVICE_BYTES, "device", "uncalibrated"),
                  MemoryTerm("cuda_context", CUDA_CONTEXT_HOST_BYTES, "host", "uncalibrated")]
    else:
        terms.append(MemoryTerm("compute", compute, "host", "touched compute buffer"))
    return MemoryEstimate("llama.cpp", n_ctx, tuple(t for t in terms if t.bytes))


# edgellm's onnxruntime backend prefills this many prompt tokens per graph run by default (OnnxOptions.prefill_chunk;
# runtimes/onnxruntime.py imports this constant)
ORT_PREFILL_CHUNK = 256


def estimate_onnxruntime(facts: ModelFacts, n_ctx: int, *, weights_bytes: int, provider: str = "CPU",
                         kv_dtype: str = "F32", prompt_tokens: int | None = None, max_tokens: int = 1,
                         prefill_chunk: int = ORT_PREFILL_CHUNK,
                         embedding_dtype: str = "F16",
                         baseline_bytes: int = ORT_INTERPRETER_BASELINE) -> MemoryEstimate:
    """Peak process memory of edgellm's onnxruntime runtime serving an ONNX decoder (GroupQueryAttention graph).

    The workload: one prompt of `prompt_tokens` prefilled in a single pass, then decode. prompt_tokens=None is
    the worst case at this n_ctx, what a plan must budget for: a prompt of n_ctx - 1 tokens (the most the
    runtime accepts), so KV for the whole context. The peak is at the end of prefill, when all of these are live:

    - interpreter: python + numpy + onnxruntime + onnx + tokenizers + edgellm imports (calibrated);
    - tokenizer: tokenizers' BPE tables + edgellm's parsed tokenizer.json, per vocabulary entry (calibrated);
    - runtime: InferenceSession structures and library pages touched by load and run (calibrated);
    - weights: non-embedding initializers x ORT_PREPACK_FACTOR (MatMulNBits prepacked by the CPU EP, fitted);
      a float embedding table (`embedding_dtype`, fp16 in edgellm's int8/int4-mse recipes) stays memory-mapped,
      a quantized one (GatherBlockQuantized, facts.embedding_bytes == 0; edgellm int4, genai int4) is a weight;
    - embedding_rows: the mapped embedding pages the prompt touches, at most one page per token (upper bound);
    - kv_cache: 2 x layers x kv_heads x head_dim x capacity in `kv_dtype` (edgellm binds float32 buffers);
      capacity = prompt + max_tokens rounded up to 64 positions on CPU, n_ctx on a GPU. Decoding past
      max_tokens doubles the CPU buffers later, but by then the prefill logits are freed, so it is lower;
    - logits: the graph returns logits for every prompt position, bound to a host array of tokens x vocab
      float32 (plus one row for decode steps) - the largest term at long prompts;
    - compute: the onnxruntime arena's high-water mark for prefill activations, linear in the prompt (fitted).

    Not modelled: the ~15 MiB transient of parsing tokenizer.json at load (a peak only for prompts of a few
    tokens), and the GPU path beyond the upstream CUDA context figures (uncalibrated, no GPU here).
    """
    on_gpu = provider.upper().startswith("CUDA")
    tokens = max(1, n_ctx - 1 if prompt_tokens is None else min(prompt_tokens, n_ctx - 1))
    if on_gpu:
        capacity = n_ctx
    else:
        capacity = min(n_ctx, _pad(tokens + max(1, max_tokens), ORT_KV_ROUND))
    kv = kv_cache_bytes(facts, capacity, kv_dtype, kv_dtype)
    if facts.embedding_bytes is not None:    # known from the artifact; 0 = a quantized table among the weights
        embed = facts.embedding_bytes
    else:
        embed = next((tensor_bytes(t) for t in facts.tensors if "embed_tokens" in t.name or "token_embd" in t.name),
                     int(facts.vocab_size * facts.hidden_size * bytes_per_element(embedding_dtype)))
    embed = min(embed, weights_bytes)
    row_bytes = embed // max(1, facts.vocab_size)
    embed_rows = min(embed, tokens * max(row_bytes, PAGE))
    chunk = max(1, min(tokens, prefill_chunk))  # the runtime prefills `prefill_chunk` tokens per graph run
    logits = (chunk + 1) * facts.vocab_size * 4
    acts = chunk * ORT_ACTIVATION_VECTORS * (facts.hidden_size + facts.intermediate_size) * 4
    tokenizer = ORT_TOKENIZER_BYTES_PER_VOCAB_ENTRY * (facts.tokenizer_entries or facts.vocab_size)
    terms = [MemoryTerm("interpreter", baseline_bytes, "host",
                        "python + numpy + onnxruntime + onnx + tokenizers imports (calibrated)"),
             MemoryTerm("tokenizer", tokenizer, "host", "BPE tables + parsed tokenizer.json (calibrated)"),
             MemoryTerm("runtime", ORT_RUNTIME_FIXED, "host", "session, kernels, library pages (calibrated)")]
    if on_gpu:
        terms += [MemoryTerm("weights", weights_bytes, "device", "initializers on the GPU (uncalibrated)"),
                  MemoryTerm("kv_cache", kv, "device", f"{capacity} positions, {kv_dtype}"),
                  MemoryTerm("compute", acts, "device", "arena for prefill activations (CPU-fitted)"),
                  MemoryTerm("logits", logits, "host", f"{chunk + 1} rows x {facts.vocab_size} float32 (prefill chunk)"),
                  MemoryTerm("cuda_context", CUDA_CONTEXT_DEVICE_BYTES, "device", "uncalibrated"),
                  MemoryTerm("cuda_context", CUDA_CONTEXT_HOST_BYTES, "host", "uncalibrated")]
    else:
        prepacked = int((weights_bytes - embed) * ORT_PREPACK_FACTOR)
        terms += [MemoryTerm("weights", prepacked, "host",
                             f"non-embedding initializers x {ORT_PREPACK_FACTOR} (MatMulNBits prepacked, fitted)"),
                  MemoryTerm("embedding_rows", embed_rows, "host", "mapped embedding pages the prompt touches"),
                  MemoryTerm("kv_cache", kv, "host", f"{capacity} positions, {kv_dtype}"),
                  MemoryTerm("logits", logits, "host", f"{chunk + 1} rows x {facts.vocab_size} float32 (prefill chunk)"),
                  MemoryTerm("compute", acts, "host", f"arena: {chunk} tokens x {ORT_ACTIVATION_VECTORS} "
                                                       "(hidden + ffn) float32 vectors (fitted)")]
    return MemoryEstimate("onnxruntime", n_ctx, tuple(t for t in terms if t.bytes))
