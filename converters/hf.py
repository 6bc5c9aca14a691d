"""Read a Hugging Face model folder without torch or transformers.

config.json variants (rope_theta vs rope_parameters, head_dim present or not, tied embeddings,
bos/eos ids as int or list), sharded safetensors through model.safetensors.index.json (memory-mapped,
streamed tensor by tensor), tokenizer.json, tokenizer_config.json, chat templates (also
chat_template.jinja) and generation_config.json. Pickle checkpoints are refused.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ConfigError, ModelFormatError, UnsafeCheckpointError
from .limits import (check_config_values, check_generation_config, check_tokenizer_config, load_json,
                     read_text)
from .safetensors_io import MappedFile, TensorInfo, read_header

log = logging.getLogger(__name__)

_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    torch_dtype: str | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


def _load_json(path: Path) -> dict[str, Any]:
    """A JSON object from a config file, bounded (size, depth, strict UTF-8, no NaN): ConfigError otherwise."""
    return load_json(path)


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise ConfigError(f"token id must be an int or a list of ints, got {value!r}")


def parse_config(raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Normalise the config variants found in the wild into one ModelConfig."""
    check_config_values(raw, source)   # types and ranges first: nothing below loops or divides on a bad value
    archs = raw.get("architectures") or []
    if not archs or not isinstance(archs, list):
        raise ConfigError(f"{source} has no 'architectures' list", "add e.g. \"architectures\": [\"LlamaForCausalLM\"]")
    cfg: dict[str, Any] = raw["text_config"] if isinstance(raw.get("text_config"), dict) else raw

    def need(*names: str) -> Any:
        for n in names:
            if n in cfg and cfg[n] is not None:
                return cfg[n]
        raise ConfigError(f"{source} is missing {names[0]!r}",
                          f"add {names[0]!r} to {source} (see the model's original config)")

    hidden = int(need("hidden_size", "n_embd", "d_model"))
    heads = int(need("num_attention_heads", "n_head"))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or 0) or hidden // heads
    if heads % kv_heads:
        raise ConfigError(f"{source}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    rope = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else None
    theta = cfg.get("rope_theta")
    if theta is None and rope is not None:
        theta = rope.get("rope_theta")
    scaling = cfg.get("rope_scaling")
    if scaling is None and rope is not None and rope.get("rope_type", "default") != "default":
        scaling = rope
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) in (None, "default"):
        scaling = None
    return ModelConfig(
        architecture=str(archs[0]),
        model_type=str(cfg.get("model_type", raw.get("model_type", ""))),
        hidden_size=hidden,
        intermediate_size=int(need("intermediate_size", "n_inner")),
        num_layers=int(need("num_hidden_layers", "n_layer")),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=int(need("vocab_size")),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta if theta is not None else 10000.0),
        rope_scaling=scaling,
        max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
        attention_bias=bool(cfg.get("attention_bias", False)),
        bos_token_id=next(iter(_ids(cfg.get("bos_token_id", raw.get("bos_token_id")))), None),
        eos_token_ids=_ids(cfg.get("eos_token_id", raw.get("eos_token_id"))),
        torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
        raw=raw,
    )


class HFModel:
    """An HF folder opened for reading. Use as a context manager to release memory maps."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config = parse_config(_load_json(path / "config.json"), str(path / "config.json"))
        self.tokenizer_config: dict[str, Any] = check_tokenizer_config(
            _load_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {},
            str(path / "tokenizer_config.json"))
        self.generation_config: dict[str, Any] = check_generation_config(
            _load_json(path / "generation_config.json") if (path / "generation_config.json").is_file() else {},
            str(path / "generation_config.json"))
        tj = path / "tokenizer.json"
        self.tokenizer_json: Path | None = tj if tj.is_file() else None
        self._tensors = self._index_tensors()
        self._maps: dict[Path, MappedFile] = {}

    # -- files ---------------------------------------------------------------------------------
    def _index_tensors(self) -> dict[str, TensorInfo]:
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            weight_map = _load_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise ModelFormatError(f"{index} has no 'weight_map'")
            files = sorted(set(weight_map.values()))
            for fname in files:
                if Path(fname).name != fname:
                    raise ModelFormatError(f"{index} names a shard outside the folder: {fname!r}")
        else:
            files = sorted(p.name for p in self.path.glob("*.safetensors"))
        if not files:
            pickles = [p.name for pat in _PICKLE_PATTERNS for p in self.path.glob(pat)]
            if pickles:
                raise UnsafeCheckpointError(
                    f"{self.path} holds only pickle checkpoints ({', '.join(sorted(pickles)[:3])}); "
                    "edgellm reads safetensors only, because pickle files can run code when loaded")
            raise ModelFormatError(f"{self.path} has no *.safetensors weights")
        tensors: dict[str, TensorInfo] = {}
        for fname in files:
            shard = self.path / fname
            if not shard.is_file():
                raise ModelFormatError(f"shard {fname} listed by the index is missing from {self.path}")
            found, _ = read_header(shard)
            for name, info in found.items():
                if name in tensors:
                    raise ModelFormatError(f"tensor {name} appears in two shards")
                tensors[name] = info
        if index.is_file():
            missing = set(weight_map or {}) - set(tensors)
            if missing:
                raise ModelFormatError(f"{len(missing)} tensors listed by the index are missing, e.g. {sorted(missing)[0]}")
        return tensors

    # -- tensors -------------------------------------------------------------------------------
    def tensor_infos(self) -> dict[str, TensorInfo]:
        return dict(self._tensors)

    def has_tensor(self, name: str) -> bool:
        return name in self._tensors

    def tensor(self, name: str, expect_shape: tuple[int, ...] | None = None) -> np.ndarray:
        """A tensor as float32 (BF16/F16 widened); memory-mapped when the dtype allows."""
        info = self._tensors.get(name)
        if info is None:
            raise ModelFormatError(f"tensor {name} is missing from {self.path}")
        if expect_shape is not None and tuple(info.shape) != tuple(expect_shape):
            raise ModelFormatError(f"tensor {name} has shape {info.shape}, config.json implies {expect_shape}")
        return self._map(info).view(info)

    def tensor_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a tensor as float32; lets converters stream one big tensor in slices."""
        info = self._tensors.get(name)
        if info is None:
            raise ModelFormatError(f"tensor {name} is missing from {self.path}")
        return self._map(info).rows(info, start, stop)

    def _map(self, info: TensorInfo) -> MappedFile:
        mf = self._maps.get(info.file)
        if mf is None:
            mf = self._maps[info.file] = MappedFile(info.file)
        return mf

    def release(self, name: str) -> None:
        """Tell the OS this tensor's pages are no longer needed (keeps peak RSS near one tensor)."""
        info = self._tensors.get(name)
        mf = self._maps.get(info.file) if info is not None else None
        if mf is not None and info is not None:
            mf.release(info)

    def iter_tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in self._tensors:
            yield name, self.tensor(name)

    # -- tokenizer -----------------------------------------------------------------------------
    @property
    def chat_template(self) -> str | None:
        jinja = self.path / "chat_template.jinja"
        if jinja.is_file():
            return read_text(jinja)
        tpl = self.tokenizer_config.get("chat_template")
        if isinstance(tpl, list):  # named templates: prefer "default"
            named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
            tpl = named.get("default") or next(iter(named.values()), None)
        return tpl if isinstance(tpl, str) else None

    def special_token(self, key: str) -> str | None:
        """bos_token / eos_token / ... from tokenizer_config (string or AddedToken dict)."""
        value = self.tokenizer_config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return value if isinstance(value, str) else None

    def close(self) -> None:
        for mf in self._maps.values():
            mf.close()
        self._maps.clear()

    def __enter__(self) -> "HFModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_hf_model(path: str | Path) -> HFModel:
    p = Path(path)
    if not p.is_dir():
        raise ModelFormatError(f"{p} is not a folder", "pass the folder that holds config.json and *.safetensors")
    if not (p / "config.json").is_file():
        raise ConfigError(f"{p} has no config.json", "pass a Hugging Face model folder")
    return HFModel(p)
