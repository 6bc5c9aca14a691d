"""Hand-written hostile HF folders: config values that once ran forever, divided by zero or built huge lists;
JSON that once raised RecursionError/OverflowError/UnicodeDecodeError; safetensors headers with wrapped or
overlapping ranges. Each `convert` must refuse with a typed error, quickly."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any, Callable

import pytest

import edgellm
from edgellm.errors import ConfigError, ModelFormatError, TokenizerError
from tests.robustness.tally import assert_clean, classify, row

BIG_NEST = "[" * 100000 + "]" * 100000


def _cfg(**change: Any) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(change)
        (folder / "config.json").write_text(json.dumps(cfg))
    return edit


def _raw(name: str, text: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(text)


def _tok(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        tok = json.loads((folder / "tokenizer.json").read_text())
        change(tok)
        (folder / "tokenizer.json").write_text(json.dumps(tok))
    return edit


def _st_header(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        st = folder / "model.safetensors"
        data = st.read_bytes()
        (n,) = struct.unpack_from("<Q", data)
        header = json.loads(data[8:8 + n])
        change(header)
        blob = json.dumps(header).encode()
        st.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n:])
    return edit


def _first(h: dict) -> dict:
    return h[next(k for k in h if k != "__metadata__")]


CASES: dict[str, Callable[[Path], None]] = {
    "layers_2^31": _cfg(num_hidden_layers=2**31),
    "layers_10^30": _cfg(num_hidden_layers=10**30),
    "layers_negative": _cfg(num_hidden_layers=-1),
    "layers_float_nan_text": _raw("config.json", b'{"architectures": ["LlamaForCausalLM"], "num_hidden_layers": NaN}'),
    "hidden_1e400": _raw("config.json", b'{"architectures": ["LlamaForCausalLM"], "hidden_size": 1e400}'),
    "heads_0": _cfg(num_attention_heads=0),
    "kv_heads_0_and_heads_0": _cfg(num_attention_heads=0, num_key_value_heads=0),
    "kv_heads_not_divisor": _cfg(num_key_value_heads=3),
    "hidden_not_divisible": _cfg(hidden_size=33),
    "vocab_2^40": _cfg(vocab_size=2**40),
    "intermediate_2^40": _cfg(intermediate_size=2**40),
    "layers_string": _cfg(num_hidden_layers="2"),
    "layers_bool": _cfg(num_hidden_layers=True),
    "rope_scaling_list": _cfg(rope_scaling=[1, 2]),
    "rope_scaling_string": _cfg(rope_scaling="linear"),
    "rope_factor_string": _cfg(rope_scaling={"rope_type": "linear", "factor": "x"}),
    "rope_factor_1e308": _cfg(rope_scaling={"rope_type": "linear", "factor": 1e308}),
    "rope_factor_missing": _cfg(rope_scaling={"rope_type": "linear"}),
    "rope_llama3_zero_gap": _cfg(rope_scaling={"rope_type": "llama3", "factor": 8, "low_freq_factor": 1,
                                               "high_freq_factor": 1, "original_max_position_embeddings": 8192}),
    "rope_llama3_original_0": _cfg(rope_scaling={"rope_type": "llama3", "factor": 8, "low_freq_factor": 1,
                                                 "high_freq_factor": 4, "original_max_position_embeddings": 0}),
    "rope_long_factor_strings": _cfg(rope_scaling={"type": "longrope", "long_factor": ["x"], "short_factor": [1]}),
    "rope_theta_inf_text": _raw("config.json", b'{"architectures": ["LlamaForCausalLM"], "rope_theta": Infinity}'),
    "rope_theta_negative": _cfg(rope_theta=-1.0),
    "eos_list_of_lists": _cfg(eos_token_id=[[1]]),
    "architectures_not_list": _cfg(architectures="LlamaForCausalLM"),
    "config_deep_nest": _raw("config.json", b'{"architectures": ["LlamaForCausalLM"], "x": ' + BIG_NEST.encode() + b"}"),
    "config_not_utf8": _raw("config.json", b'{"architectures": ["Llama\xff\xfe"]}'),
    "config_not_object": _raw("config.json", b"[1, 2, 3]"),
    "config_huge_int_digits": _raw("config.json", b'{"vocab_size": 1' + b"0" * 5000 + b"}"),
    "config_truncated": _raw("config.json", b'{"architectures": ["Lla'),
    "text_config_heads_0": _cfg(text_config={"num_attention_heads": 0, "hidden_size": 32}),
    "name_or_path_nul": _cfg(_name_or_path="a\x00b"),
    "name_or_path_5000_chars": _cfg(_name_or_path="x" * 5000),
    "architecture_control_chars": _cfg(architectures=["Llama\x1b[2J"]),
    "eos_id_past_vocab": _cfg(eos_token_id=10**6),
    "generation_eos_string": _raw("generation_config.json", b'{"eos_token_id": "x"}'),
    "generation_eos_nested": _raw("generation_config.json", b'{"eos_token_id": [[1]]}'),
    "generation_temperature_string": _raw("generation_config.json", b'{"temperature": "hot"}'),
    "generation_top_k_float": _raw("generation_config.json", b'{"top_k": 2.5}'),
    "vocab_lone_surrogate": _tok(lambda t: t["model"]["vocab"].update({"\udc80": 5})),
    "added_token_lone_surrogate": _tok(lambda t: t["added_tokens"].append({"id": 7, "content": "\ud800"})),
    "template_lone_surrogate": _raw("tokenizer_config.json", b'{"chat_template": "{{ \'\\udc80\' }}"}'),
    "name_lone_surrogate": _cfg(_name_or_path="a\udc80"),
    "added_token_id_1e6": _tok(lambda t: t["added_tokens"].append({"id": 1_000_000, "content": "<x>", "special": True})),
    "added_token_id_negative": _tok(lambda t: t["added_tokens"].append({"id": -5, "content": "<x>"})),
    "added_token_id_string": _tok(lambda t: t["added_tokens"].append({"id": "7", "content": "<x>"})),
    "vocab_id_float": _tok(lambda t: t["model"]["vocab"].update({"zz": 3.0})),
    "vocab_id_past_embeddings": _tok(lambda t: t["model"]["vocab"].update({"zz": 10**6})),
    "vocab_not_object": _tok(lambda t: t["model"].update(vocab=[1, 2])),
    "merges_numbers": _tok(lambda t: t["model"].update(merges=[1, 2])),
    "pre_tokenizer_lists": _tok(lambda t: t.update(pre_tokenizer={"type": ["Split"], "pattern": [1]})),
    "tokenizer_deep_nest": _raw("tokenizer.json", b'{"model": ' + BIG_NEST.encode() + b"}"),
    "tokenizer_not_utf8": _raw("tokenizer.json", b'{"model": "\xff"}'),
    "tokenizer_config_bos_list": _raw("tokenizer_config.json", b'{"bos_token": ["<s>"]}'),
    "tokenizer_config_template_int": _raw("tokenizer_config.json", b'{"chat_template": 5}'),
    "st_shape_wrap": _st_header(lambda h: _first(h).update(shape=[2**32, 2**32])),
    "st_shape_1e400": _st_header(lambda h: _first(h).update(shape=[10**400])),
    "st_shape_negative": _st_header(lambda h: _first(h).update(shape=[-1, 4])),
    "st_shape_float": _st_header(lambda h: _first(h).update(shape=[2.5])),
    "st_offsets_reversed": _st_header(lambda h: _first(h).update(data_offsets=[8, 0])),
    "st_offsets_string": _st_header(lambda h: _first(h).update(data_offsets=["0", "8"])),
    "st_dtype_unknown": _st_header(lambda h: _first(h).update(dtype="F8_E9")),
    "st_entry_not_object": _st_header(lambda h: h.update({"x": 5})),
    "st_metadata_not_strings": _st_header(lambda h: h.update({"__metadata__": {"a": [1]}})),
    "st_overlap": _st_header(lambda h: h.update({"dup": dict(_first(h))})),
    "st_header_len_2^63": _raw("model.safetensors", struct.pack("<Q", 2**63) + b"{}"),
    "st_header_deep": _raw("model.safetensors", struct.pack("<Q", 200000) + BIG_NEST.encode()),
    "st_header_not_utf8": _raw("model.safetensors", struct.pack("<Q", 4) + b'{"\xff'),
    "index_weight_map_lists": _raw("model.safetensors.index.json", b'{"weight_map": {"a": ["x"]}}'),
    "index_shard_escape": _raw("model.safetensors.index.json", b'{"weight_map": {"a": "../../etc/passwd"}}'),
    "chat_template_jinja_not_utf8": _raw("chat_template.jinja", b"{{ '\xff' }}"),
}


@pytest.fixture(scope="module")
def corpus(seed_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_corpus")
    out = {}
    for name, edit in CASES.items():
        folder = root / name
        shutil.copytree(seed_hf, folder)
        edit(folder)
        out[name] = folder
    return out


def test_every_hostile_hf_folder_is_refused_with_a_typed_error(corpus: dict[str, Path], tmp_path: Path) -> None:
    accepted = [name for name, folder in corpus.items()
                if classify("hf corpus (hand-written)", name,
                            lambda: edgellm.convert(folder, tmp_path / name, format="gguf", quant="F32")) == "accepted"]
    assert_clean("hf corpus (hand-written)")
    assert not accepted, f"hostile folders converted: {accepted}"


def test_onnx_convert_refuses_the_same_configs(corpus: dict[str, Path], tmp_path: Path) -> None:
    import edgellm.converters.onnx_graph  # noqa: F401  (imported before the clock starts: onnx takes 2 s to import)

    for name in ("layers_2^31", "heads_0", "vocab_2^40", "added_token_id_1e6", "st_shape_wrap", "config_deep_nest"):
        classify("hf corpus via onnx convert", name,
                 lambda: edgellm.convert(corpus[name], tmp_path / name, format="onnx", quant="fp32"))
    assert_clean("hf corpus via onnx convert")


def test_errors_name_the_key(corpus: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_hidden_layers=2147483648"):
        edgellm.convert(corpus["layers_2^31"], tmp_path / "a", format="gguf", quant="F32")
    with pytest.raises(TokenizerError, match=r"added_tokens\[\d+\]\.id=1000000"):
        edgellm.convert(corpus["added_token_id_1e6"], tmp_path / "b", format="gguf", quant="F32")
    with pytest.raises(ModelFormatError, match="element count|dimension"):
        edgellm.convert(corpus["st_shape_wrap"], tmp_path / "c", format="gguf", quant="F32")


BAD_ARGS: list[dict[str, Any]] = [
    {"quant": 5}, {"quant": None}, {"quant": ""}, {"quant": "../x"}, {"format": "zip"}, {"format": None},
    {"context_length": 0}, {"context_length": -5}, {"context_length": 2**40}, {"context_length": "x"},
    {"threads": 0}, {"threads": -1}, {"threads": "x"}, {"pre_tokenizer": 5}, {"block_size": 3},
]


def test_bad_convert_arguments_are_typed_before_anything_is_written(seed_hf: Path, tmp_path: Path) -> None:
    for i, kw in enumerate(BAD_ARGS):
        args = {"format": "gguf", "quant": "F32", **kw}
        out = tmp_path / f"a{i}"
        if classify("convert arguments", str(kw), lambda: edgellm.convert(seed_hf, out, **args)) == "accepted":
            row("convert arguments").escapes += 1
            row("convert arguments").note(f"{kw}: accepted")
        assert not out.exists()
    assert_clean("convert arguments")
