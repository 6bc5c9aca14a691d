"""The onnxruntime backend. Opens ONNX artifacts written by edgellm (or any genai-style decoder graph).

onnxruntime (and onnx, used to inspect the graph) are imported inside `open_onnxruntime`, so a missing
package is a `BackendUnavailableError` with an install hint. Generation prefills the prompt in one pass,
then runs one token per step through IOBinding; with a fused graph (GroupQueryAttention) the KV cache is
one buffer per layer sized to prompt + max_tokens, bound as both past and present, and the step's inputs and
logits are OrtValues over fixed host arrays, so a decode step allocates and copies nothing (Python adds
~0.2 ms to an onnxruntime step). Decode speed is then onnxruntime's own, set by the thread count: on a
machine shared with other busy processes a multi-thread pool can be slower than one thread (pass
threads=1, or allow_spinning=False, as a load extra).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, ClassVar, Generator, Iterator, Sequence

import numpy as np

from ..cancellation import CancelToken
from ..errors import ArtifactError, BackendUnavailableError, ContextOverflowError, ModelFormatError
from ..devices.memory import ORT_KV_ROUND, ORT_PREFILL_CHUNK
from .base import Capabilities, LoadOptions, SamplingParams, TokenizerInfo, default_threads, register_runtime
from .onnx_support import (CUDA_EP, INSTALL_HINT, ArtifactTokenizer, ProviderChoice,  # noqa: F401 (re-exported)
                           check_external_data, check_side_files, fast_calls, select_providers, session_config)
from .options import OnnxOptions
from .sampling import Sampler, token_logprobs

log = logging.getLogger(__name__)


# -- the runtime -----------------------------------------------------------------------------------
class OnnxRuntime:
    name: ClassVar[str] = "onnxruntime"
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True, logits=True, gpu_offload=True, native_sampling=False, formats=("onnx",), logprobs=True,
        cancellable=True)

    def __init__(self, path: Path, options: LoadOptions, ort: Any, onnx_module: Any) -> None:
        self._ort = ort
        self.path = path
        self.folder = path.parent
        self.options = options
        proto = check_external_data(onnx_module, path)
        self._ops = {n.op_type for n in proto.graph.node}
        self._inputs = {i.name for i in proto.graph.input}
        side = check_side_files(self.folder)       # bounded, typed, no links out of the folder
        self.genai, self.tokenizer_config = side["genai_config.json"], side["tokenizer_config.json"]
        self._layers, self._kv_heads, self._head_dim = self._kv_geometry(proto)
        self._vocab = self._logits_width(proto)
        del proto
        self.shared_kv = "GroupQueryAttention" in self._ops
        self.backend_options: OnnxOptions = options.typed(OnnxOptions)
        self.prefill_chunk = self.backend_options.prefill_chunk or ORT_PREFILL_CHUNK
        choice = select_providers(options.execution_provider, ort.get_available_providers())
        self.threads = options.threads or default_threads()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        for key, value in session_config(self.backend_options).items():
            so.add_session_config_entry(key, value)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=list(choice.providers))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelFormatError(f"onnxruntime could not load {path}: {exc}") from None
        actual = self.session.get_providers()
        self._device = "cuda" if actual and actual[0] == CUDA_EP else "cpu"
        self.provider_note = choice.note
        if choice.device == "cuda" and self._device != "cuda":
            self.provider_note = f"{CUDA_EP} failed to initialise; running on CPU"
        if self.provider_note:
            log.warning("%s", self.provider_note)
        self.tokenizer = ArtifactTokenizer(self.folder)
        model_cfg: dict[str, Any] = self.genai["model"] if isinstance(self.genai.get("model"), dict) else {}
        ctx_len = model_cfg.get("context_length")
        valid = isinstance(ctx_len, int) and not isinstance(ctx_len, bool) and ctx_len > 0
        self._n_ctx: int = min(options.n_ctx, ctx_len) if valid and isinstance(ctx_len, int) else options.n_ctx
        self._tok_info: TokenizerInfo | None = None

    # -- setup ---------------------------------------------------------------------------------
    def _kv_geometry(self, proto: Any) -> tuple[int, int, int]:
        past = [i for i in proto.graph.input if i.name.startswith("past_key_values.") and i.name.endswith(".key")]
        if not past or "input_ids" not in self._inputs:
            raise ModelFormatError(f"{self.path} is not a decoder graph with input_ids and past_key_values.*")
        dims = past[0].type.tensor_type.shape.dim
        # genai builders leave the dims symbolic and state them in genai_config.json instead
        decoder = (self.genai.get("model") or {}).get("decoder") or {}
        kv_heads = (dims[1].dim_value if len(dims) == 4 else 0) or int(decoder.get("num_key_value_heads", 0))
        head_dim = (dims[3].dim_value if len(dims) == 4 else 0) or int(decoder.get("head_size", 0))
        if len(dims) != 4 or not kv_heads or not head_dim:
            raise ModelFormatError(f"{self.path}: past_key_values.0.key must be [batch, kv_heads, seq, head_dim] "
                                   "with sizes in the graph or in genai_config.json")
        return len(past), kv_heads, head_dim

    @staticmethod
    def _logits_width(proto: Any) -> int:
        """The vocab size from the graph's logits output (0 when it is symbolic)."""
        for o in proto.graph.output:
            if o.name == "logits":
                dims = o.type.tensor_type.shape.dim
                return int(dims[-1].dim_value) if dims else 0
        return 0

    # -- properties ----------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def n_vocab(self) -> int:
        """Rows of the embedding (the logits width); token ids must stay below it."""
        return int(self._vocab or self.tokenizer.vocab_size)

    @property
    def provider(self) -> str:
        return self._device

    @property
    def tokenizer_info(self) -> TokenizerInfo:
        if self._tok_info is None:
            tc = self.tokenizer_config
            model_cfg: dict[str, Any] = self.genai["model"] if isinstance(self.genai.get("model"), dict) else {}

            def text(key: str) -> str:
                v = tc.get(key)
                v = v.get("content", "") if isinstance(v, dict) else v
                return v if isinstance(v, str) else ""

            bos_text, eos_text = text("bos_token"), text("eos_token")
            bos = self.tokenizer.tok.token_to_id(bos_text) if bos_text else None
            if bos is None and isinstance(model_cfg.get("bos_token_id"), int):
                bos = model_cfg["bos_token_id"]
            eos: set[int] = set()
            cfg_eos = model_cfg.get("eos_token_id")
            eos.update([cfg_eos] if isinstance(cfg_eos, int) else
                       [e for e in cfg_eos if isinstance(e, int)] if isinstance(cfg_eos, list) else [])
            eos_id = self.tokenizer.tok.token_to_id(eos_text) if eos_text else None
            if eos_id is not None:
                eos.add(eos_id)
            if eos_text and not bos_text and bos is not None:
                bos_text = self.tokenizer.tok.id_to_token(bos) or ""
            self._tok_info = TokenizerInfo(bos_id=bos, eos_ids=tuple(sorted(eos)), bos_text=bos_text,
                                           eos_text=eos_text, add_bos=bool(tc.get("add_bos_token", False)),
                                           chat_template=tc.get("chat_template") if isinstance(
                                               tc.get("chat_template"), str) else None)
        return self._tok_info

    # -- tokens --------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        ids = self.tokenizer.encode(text, parse_special)
        bos = self.tokenizer_info.bos_id
        if add_special and bos is not None:
            ids.insert(0, bos)
        return ids

    def token_bytes(self, token: int) -> bytes:
        return self.tokenizer.token_bytes(token)

    # -- compute -------------------------------------------------------------------------------
    def _ortvalue(self, shape: tuple[int, ...]) -> Any:
        return self._ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, self._device, 0)

    def _mask_views(self, mask: np.ndarray, first: int, last: int, raw: bool) -> list[Any]:
        """OrtValues over mask[:, :k] for k = first..last (raw: the binding-level objects)."""
        values = [self._host_value(mask[:, :k]) for k in range(first, last + 1)]
        return [v._ortvalue for v in values] if raw else values

    def _host_value(self, array: np.ndarray) -> Any:
        """An OrtValue over `array`'s own memory: ORT reads inputs from it and writes outputs into it."""
        return self._ort.OrtValue.ortvalue_from_numpy(array)

    def _bind_inputs(self, binding: Any, ids: Sequence[int], start: int) -> None:
        n = len(ids)
        binding.bind_cpu_input("input_ids", np.asarray([ids], dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ones((1, start + n), dtype=np.int64))
        if "position_ids" in self._inputs:
            binding.bind_cpu_input("position_ids", np.arange(start, start + n, dtype=np.int64)[None, :])

    def _run(self, binding: Any, run_options: Any = None) -> None:
        self.session.run_with_iobinding(binding, run_options)

    def _logits_buffer(self, binding: Any, n: int) -> np.ndarray | None:
        """Bind `logits` to a host array of [1, n, vocab] so reading it is free; None when the vocab is unknown."""
        if not self._vocab:
            binding.bind_output("logits", self._device)
            return None
        out = np.empty((1, n, self._vocab), dtype=np.float32)
        binding.bind_ortvalue_output("logits", self._host_value(out))
        return out

    def logits(self, tokens: list[int]) -> np.ndarray:
        if not tokens:
            return np.zeros((0, 0), dtype=np.float32)
        binding = self.session.io_binding()
        self._bind_inputs(binding, tokens, 0)
        empty = self._ortvalue((1, self._kv_heads, 0, self._head_dim))
        for i in range(self._layers):
            for kind in ("key", "value"):
                binding.bind_ortvalue_input(f"past_key_values.{i}.{kind}", empty)
                binding.bind_output(f"present.{i}.{kind}", self._device)
        out = self._logits_buffer(binding, len(tokens))
        self._run(binding)
        if out is None:
            out = binding.get_outputs()[-1].numpy()  # logits was bound last
        return np.asarray(out[0], dtype=np.float32)

    def generate(self, prompt: list[int], params: SamplingParams,
                 cancel: CancelToken | None = None) -> Iterator[int]:
        """With `cancel`: checked between prefill chunks and decode steps, and cancelling sets
        `RunOptions.terminate` on the run in flight (onnxruntime stops it between kernels and raises; this
        generator then returns). Every call has its own RunOptions: a terminated one refuses every later run."""
        if len(prompt) >= self.n_ctx:
            raise ContextOverflowError(f"the prompt has {len(prompt)} tokens but the context holds {self.n_ctx}")
        steps = (self._generate_shared if self.shared_kv else self._generate_copying)
        if cancel is None:
            return steps(prompt, params, None, None)
        return self._cancellable(steps, prompt, params, cancel)

    def _cancellable(self, steps: Callable[..., Generator[int, None, None]], prompt: list[int], params: SamplingParams,
                     cancel: CancelToken) -> Iterator[int]:
        run_options = self._ort.RunOptions()
        unhook = cancel.on_cancel(lambda: setattr(run_options, "terminate", True))
        gen = steps(prompt, params, run_options, cancel)
        try:
            while not cancel.cancelled:
                try:
                    token = next(gen)
                except StopIteration:
                    return
                except Exception:   # noqa: BLE001 - onnxruntime's own type for "Exiting due to terminate flag"
                    if cancel.cancelled:
                        return
                    raise
                yield token
        finally:
            unhook()
            gen.close()

    KV_ROUND = ORT_KV_ROUND   # KV capacity grows in multiples of this many positions (the planner reads it too)

    def _kv_capacity(self, prompt_len: int, params: SamplingParams) -> int:
        """Positions to allocate: what prompt + max_tokens needs (rounded up), not the whole context. On CPU the
        buffers grow (doubling, one copy) if a caller iterates past max_tokens; on other devices they are full."""
        if self._device != "cpu":
            return self.n_ctx
        want = prompt_len + max(1, params.max_tokens)
        return min(self.n_ctx, -(-want // self.KV_ROUND) * self.KV_ROUND)

    def _bind_kv(self, binding: Any, capacity: int, old: list[np.ndarray] | None = None,
                 used: int = 0) -> list[Any]:
        """One [1, kv, capacity, hd] buffer per KV tensor, bound as both past and present (GQA writes the new
        rows in place). With `old`, its first `used` positions are copied over (growth)."""
        shape = (1, self._kv_heads, capacity, self._head_dim)
        bufs: list[Any] = []
        for i in range(self._layers):
            for k in ("key", "value"):
                if self._device == "cpu":
                    arr = np.empty(shape, dtype=np.float32)
                    if old is not None:
                        arr[:, :, :used] = old[len(bufs)][:, :, :used]
                    bufs.append(arr)
                    value = self._host_value(arr)
                else:
                    value = self._ortvalue(shape)
                    bufs.append(value)
                binding.bind_ortvalue_input(f"past_key_values.{i}.{k}", value)
                binding.bind_ortvalue_output(f"present.{i}.{k}", value)
        return bufs

    def _generate_shared(self, prompt: list[int], params: SamplingParams, run_options: Any,
                         cancel: CancelToken | None) -> Generator[int, None, None]:
        """GroupQueryAttention path: shared past/present KV buffers sized to prompt + max_tokens (GQA appends in
        place, reading seqlens_k/total_sequence_length from attention_mask), and every per-step input/output an
        OrtValue over a preallocated host array, so a decode step allocates nothing, copies nothing and rebinds
        only attention_mask (its length is the total sequence length)."""
        binding = self.session.io_binding()
        capacity = self._kv_capacity(len(prompt), params)
        kv = self._bind_kv(binding, capacity)
        # prefill in chunks: GQA appends each chunk to the shared KV; the logits buffer (the graph emits a row per
        # position) stays chunk x vocab instead of prompt x vocab (1.5 GiB for 8k tokens of a 49k vocabulary)
        chunk = self.prefill_chunk
        for start in range(0, len(prompt), chunk):
            if cancel is not None and cancel.cancelled:
                return
            part = prompt[start:start + chunk]
            self._bind_inputs(binding, part, start)
            prefill_out = self._logits_buffer(binding, len(part))
            self._run(binding, run_options)
        row = (prefill_out if prefill_out is not None else binding.get_outputs()[-1].numpy())[0, -1]
        del prefill_out
        # decode: fixed host arrays, written in place each step
        ids = np.zeros((1, 1), dtype=np.int64)
        positions = np.zeros((1, 1), dtype=np.int64)
        mask = np.ones((1, self.n_ctx), dtype=np.int64)
        binding.bind_ortvalue_input("input_ids", self._host_value(ids))
        if "position_ids" in self._inputs:
            binding.bind_ortvalue_input("position_ids", self._host_value(positions))
        step = self._logits_buffer(binding, 1)
        # the attention_mask views each step binds (its length is the total sequence length), made before the
        # first decode step for every position the KV buffers hold, so a step only rebinds and runs
        run, bind_mask, raw = fast_calls(self.session, binding, run_options)
        views = self._mask_views(mask, len(prompt) + 1, capacity, raw)

        def advance(token: int, pos: int) -> np.ndarray:
            nonlocal capacity, kv, views
            if pos >= capacity:   # the caller went past max_tokens: double the buffers (CPU only)
                capacity = min(self.n_ctx, 2 * capacity)
                kv = self._bind_kv(binding, capacity, kv, pos)
                views = self._mask_views(mask, len(prompt) + 1, capacity, raw)
            ids[0, 0] = token
            positions[0, 0] = pos
            bind_mask("attention_mask", views[pos - len(prompt)])
            run()
            return (step if step is not None else binding.get_outputs()[-1].numpy())[0, -1]

        yield from self._decode(params, prompt, row, advance)

    def _generate_copying(self, prompt: list[int], params: SamplingParams, run_options: Any,
                          cancel: CancelToken | None) -> Generator[int, None, None]:
        """Standard-ops graph: past grows by concatenation, so each step binds the last presents as the pasts."""
        binding = self.session.io_binding()
        names = [(f"past_key_values.{i}.{k}", f"present.{i}.{k}") for i in range(self._layers) for k in ("key", "value")]
        empty = self._ortvalue((1, self._kv_heads, 0, self._head_dim))
        for past, present in names:
            binding.bind_ortvalue_input(past, empty)
            binding.bind_output(present, self._device)
        self._bind_inputs(binding, prompt, 0)
        prefill_out = self._logits_buffer(binding, len(prompt))
        self._run(binding, run_options)
        outputs = binding.get_outputs()
        row = (prefill_out if prefill_out is not None else outputs[-1].numpy())[0, -1]
        del prefill_out
        step = np.empty((1, 1, self._vocab or row.shape[-1]), dtype=np.float32)
        step_value = self._host_value(step)

        def advance(token: int, pos: int) -> np.ndarray:
            nonlocal outputs
            for (past, present), value in zip(names, outputs):   # presents were bound first, logits last
                binding.bind_ortvalue_input(past, value)
                binding.bind_output(present, self._device)
            binding.bind_ortvalue_output("logits", step_value)
            self._bind_inputs(binding, [token], pos)
            self._run(binding, run_options)
            outputs = binding.get_outputs()
            return step[0, -1]

        yield from self._decode(params, prompt, row, advance)

    def _decode(self, params: SamplingParams, prompt: list[int], row: np.ndarray,
                advance: Callable[[int, int], np.ndarray]) -> Iterator[int]:
        """The decode loop both graph kinds share: sample from `row`, yield the token, then `advance(token, pos)`
        runs one step and returns the next logits row; stops when the context is full."""
        sampler = Sampler(params)
        history = list(prompt)
        budget = self.n_ctx - len(prompt)
        for produced in range(1, budget + 1):
            token = sampler(row, history)
            history.append(token)
            self._last_row = row  # what token_logprobs reads, until advance() runs the next step
            yield token
            if produced >= budget:
                return
            row = advance(token, len(prompt) + produced - 1)

    def token_logprobs(self, token: int, top: int) -> tuple[float, tuple[tuple[int, float], ...]]:
        """For the token `generate` just yielded: its log-probability and the `top` alternatives."""
        return token_logprobs(self._last_row, token, top)

    def close(self) -> None:
        self.session = None  # onnxruntime frees its arenas with the session


def open_onnxruntime(path: Path, options: LoadOptions) -> OnnxRuntime:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(f"onnxruntime is not importable ({exc})", INSTALL_HINT) from None
    p = Path(path)
    if p.is_dir():
        p = p / "model.onnx"
    if not p.is_file():
        raise ArtifactError(f"{p} does not exist")
    return OnnxRuntime(p, options, onnxruntime, onnx)


register_runtime(OnnxRuntime.name, open_onnxruntime, OnnxRuntime.capabilities.formats,
                 capabilities=OnnxRuntime.capabilities, options=OnnxOptions)
