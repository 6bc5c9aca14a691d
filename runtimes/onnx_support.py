"""onnxruntime backend support: execution-provider choice, session options, external-data checks and the
artifact's tokenizer (byte-level BPE via `tokenizers`, with raw token bytes for streaming)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ArtifactError, EdgeLLMError, ModelFormatError, TokenizerError, UnsafePathError
from .options import OnnxOptions

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'edgellm[onnx]'"
CPU_EP, CUDA_EP = "CPUExecutionProvider", "CUDAExecutionProvider"


# -- files of an artifact folder ------------------------------------------------------------------
def artifact_file(folder: Path, name: str) -> Path:
    """`folder / name`, refused (UnsafePathError) when it is a link that resolves outside the folder: a bare
    model.onnx must not read a tokenizer.json or config that a symlink points elsewhere."""
    path = folder / name
    root, target = folder.resolve(), path.resolve()
    if target != root and root not in target.parents:
        raise UnsafePathError(f"{path} resolves to {target}, outside the artifact folder {root}",
                              "copy the file into the artifact folder instead of linking to it")
    return path


def read_json(path: Path, *, max_bytes: int = 16 << 20, error: type[EdgeLLMError] = ArtifactError) -> dict[str, Any]:
    """A bounded JSON object from an artifact folder (size, depth, UTF-8), as a typed error otherwise. The
    converters have the same rules (converters/limits.py); a runtime does not import a converter."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path} is {size} bytes; more than the {max_bytes} this kind of file may hold")
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise error(f"{path} nests JSON too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise error(f"{path} is not valid UTF-8 JSON ({str(exc)[:200]})") from None
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object")
    try:   # a lone surrogate ("\\udc80" in the file) is not valid Unicode: refuse it here, not deep in a library
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{path} holds a string with a lone surrogate; it is not valid Unicode") from None
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


MAX_TOKENIZER_BYTES = 512 << 20

# JSON side files of an ONNX artifact: key path -> (allowed types, lowest, highest) for the values edgellm (the
# runtime and the planner) reads from them. Everything is checked before any of it is used.
_INT = (int,)
_SIDE_SCHEMA: dict[str, dict[tuple[str, ...], tuple[tuple[type, ...], float, float]]] = {
    "genai_config.json": {
        ("model",): ((dict,), 0, 0), ("model", "decoder"): ((dict,), 0, 0),
        ("model", "context_length"): (_INT, 1, 1 << 26), ("model", "vocab_size"): (_INT, 1, 1 << 22),
        ("model", "bos_token_id"): (_INT, 0, 1 << 22), ("model", "pad_token_id"): (_INT, -1, 1 << 22),
        ("model", "eos_token_id"): ((int, list), 0, 1 << 22),
        ("model", "decoder", "num_key_value_heads"): (_INT, 1, 4096),
        ("model", "decoder", "num_attention_heads"): (_INT, 1, 4096),
        ("model", "decoder", "head_size"): (_INT, 1, 1 << 14), ("model", "decoder", "hidden_size"): (_INT, 1, 1 << 17),
        ("model", "decoder", "num_hidden_layers"): (_INT, 1, 512),
    },
    "config.json": {
        ("num_attention_heads",): (_INT, 1, 4096), ("num_key_value_heads",): (_INT, 1, 4096),
        ("intermediate_size",): (_INT, 1, 1 << 20), ("hidden_size",): (_INT, 1, 1 << 17),
        ("max_position_embeddings",): (_INT, 1, 1 << 26), ("model_type",): ((str,), 0, 0),
        ("tie_word_embeddings",): ((bool,), 0, 0), ("vocab_size",): (_INT, 1, 1 << 22),
    },
    "tokenizer_config.json": {
        ("add_bos_token",): ((bool,), 0, 0), ("add_eos_token",): ((bool,), 0, 0),
        ("chat_template",): ((str, list), 0, 0), ("bos_token",): ((str, dict), 0, 0),
        ("eos_token",): ((str, dict), 0, 0),
    },
}


def check_side_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Read and validate the JSON side files of an ONNX artifact (genai_config.json, config.json,
    tokenizer_config.json): bounded, inside the folder (no links out), each value edgellm uses of its type and
    range. Returns {name: data} ({} for an absent file); ArtifactError / UnsafePathError otherwise."""
    out: dict[str, dict[str, Any]] = {}
    for name, schema in _SIDE_SCHEMA.items():
        path = artifact_file(folder, name)
        data = read_json(path) if path.is_file() else {}
        for keys, (kinds, lo, hi) in schema.items():
            value: Any = data
            for k in keys:
                value = value.get(k) if isinstance(value, dict) else None
            if value is None:
                continue
            where = f"{path}: {'.'.join(keys)}"
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ArtifactError(f"{where} must be {' or '.join(k.__name__ for k in kinds)}, not "
                                    f"{type(value).__name__}", "rebuild the artifact with `edgellm convert`")
            items = value if isinstance(value, list) and kinds[0] is int else [value] if kinds[0] is int else []
            for v in items:
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise ArtifactError(f"{where}={str(v)[:40]} must be an integer in [{int(lo)}, {int(hi)}]",
                                        "rebuild the artifact with `edgellm convert`")
        out[name] = data
    return out


# -- execution providers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ProviderChoice:
    providers: tuple[str, ...]     # what the session is created with, in priority order
    device: str                    # "cpu" | "cuda"
    note: str | None               # why the request was not honoured, if it was not


def select_providers(requested: str, available: Sequence[str]) -> ProviderChoice:
    """Pick execution providers for `requested` ("cpu" | "cuda[:N]") from onnxruntime's available list."""
    want = requested.split(":")[0].lower()
    if want == "cuda":
        if CUDA_EP in available:
            return ProviderChoice((CUDA_EP, CPU_EP), "cuda", None)
        return ProviderChoice((CPU_EP,), "cpu", f"{CUDA_EP} is not available in this onnxruntime build "
                              f"(available: {', '.join(available) or 'none'}); install onnxruntime-gpu for CUDA. "
                              "Running on CPU.")
    if want not in ("cpu", "auto"):
        return ProviderChoice((CPU_EP,), "cpu", f"execution provider {requested!r} is unknown; running on CPU")
    return ProviderChoice((CPU_EP,), "cpu", None)


# -- session options -------------------------------------------------------------------------------
def session_config(options: OnnxOptions) -> dict[str, str]:
    """onnxruntime session config entries from the typed options (runtimes.options.OnnxOptions).

    `allow_spinning` (bool): whether idle intra-op threads spin (onnxruntime's default, fastest on idle cores) or
    sleep (kinder to a machine shared with other busy processes). `session_config` (dict): raw
    `add_session_config_entry` pairs, e.g. {"session.dynamic_block_base": "4"}."""
    out: dict[str, str] = {}
    if options.allow_spinning is not None:
        out["session.intra_op.allow_spinning"] = "1" if options.allow_spinning else "0"
    out.update({str(k): str(v) for k, v in options.session_config.items()})
    return out


# -- artifact inspection ---------------------------------------------------------------------------
def check_external_data(onnx_module: Any, model_path: Path) -> Any:
    """Parse model.onnx without its weights; refuse external data that points outside its folder."""
    try:
        proto = onnx_module.load(str(model_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for corrupt files
        raise ModelFormatError(f"{model_path} is not a readable ONNX model ({exc})") from None
    root = model_path.parent.resolve()
    for t in proto.graph.initializer:
        if t.data_location != onnx_module.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if not location or Path(location).is_absolute() or (target != root and root not in target.parents):
            raise UnsafePathError(f"{model_path.name}: tensor {t.name} reads external data from {location!r}, "
                                  f"outside the artifact folder {root}")
        if not target.is_file():
            raise ModelFormatError(f"{model_path.name}: external data file {location!r} is missing")
    return proto


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: every byte as a printable unicode character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


class ArtifactTokenizer:
    """tokenizer.json through the `tokenizers` library, with raw bytes per token for streaming."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        path = artifact_file(folder, "tokenizer.json")
        if not path.is_file():
            raise ArtifactError(f"{folder} has no tokenizer.json", "rebuild the artifact with `edgellm convert`")
        data = read_json(path, max_bytes=MAX_TOKENIZER_BYTES, error=TokenizerError)
        try:
            self.tok = Tokenizer.from_str(json.dumps(data))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for every malformed file
            raise TokenizerError(f"{path} is not a tokenizer the tokenizers library can load ({str(exc)[:200]})",
                                 "rebuild the artifact with `edgellm convert`") from None
        decoder = json.dumps(data.get("decoder") or {})
        self.byte_level = "ByteLevel" in decoder
        added = data.get("added_tokens") or []
        self.special = {a["id"] for a in added if isinstance(a, dict) and a.get("special") and
                        isinstance(a.get("id"), int)} if isinstance(added, list) else set()
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self._byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        self._cache: dict[int, bytes] = {}

    def encode(self, text: str, parse_special: bool) -> list[int]:
        self.tok.encode_special_tokens = not parse_special
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def token_bytes(self, token: int) -> bytes:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        piece = self.tok.id_to_token(token)
        if piece is None or token in self.special:
            out = b""
        elif self.byte_level and all(ch in self._byte_of for ch in piece):
            out = bytes(self._byte_of[ch] for ch in piece)
        elif piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:   # sentencepiece byte token
            out = bytes([int(piece[3:5], 16)])
        else:
            out = piece.replace("\u2581", " ").encode("utf-8")
        self._cache[token] = out
        return out


# -- the decode step's calls -----------------------------------------------------------------------
def fast_calls(session: Any, binding: Any,
                run_options: Any = None) -> tuple[Callable[[], None], Callable[[str, Any], None], bool]:
    """(run, bind, raw) for the decode step: onnxruntime's binding-level objects called through partial (no
    Python frame per call: ~1% of a 135M model's step) when its Python wrapper exposes them (raw=True, bind
    then takes the binding-level OrtValue), else the public API."""
    inner_session, inner_binding = getattr(session, "_sess", None), getattr(binding, "_iobinding", None)
    if inner_session is not None and inner_binding is not None and hasattr(inner_session, "run_with_iobinding"):
        return (partial(inner_session.run_with_iobinding, inner_binding, run_options),
                inner_binding.bind_ortvalue_input, True)
    return partial(session.run_with_iobinding, binding, run_options), binding.bind_ortvalue_input, False
