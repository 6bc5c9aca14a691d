"""The HF reader: config variants, sharded/memory-mapped safetensors, tokenizer files, refusals."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgellm.converters.hf import parse_config, read_hf_model
from edgellm.converters.safetensors_io import bf16_to_f32, f32_to_bf16, read_header, write_safetensors
from edgellm.errors import ConfigError, ModelFormatError, UnsafeCheckpointError

BASE = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 100}


def test_config_defaults_and_derived_values() -> None:
    c = parse_config(dict(BASE))
    assert (c.num_kv_heads, c.head_dim, c.rope_theta, c.tie_word_embeddings) == (4, 16, 10000.0, False)
    assert c.eos_token_ids == () and c.bos_token_id is None


def test_config_variants_rope_parameters_head_dim_and_id_lists() -> None:
    c = parse_config({**BASE, "num_key_value_heads": 2, "head_dim": 32,
                      "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
                      "tie_word_embeddings": True, "bos_token_id": 7, "eos_token_id": [8, 9]})
    assert (c.num_kv_heads, c.head_dim, c.rope_theta, c.rope_scaling) == (2, 32, 500000.0, None)
    assert c.tie_word_embeddings and c.bos_token_id == 7 and c.eos_token_ids == (8, 9)
    scaled = parse_config({**BASE, "rope_theta": 1e6, "rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    assert scaled.rope_theta == 1e6 and scaled.rope_scaling == {"rope_type": "linear", "factor": 2.0}


@pytest.mark.parametrize("missing", ["hidden_size", "num_hidden_layers", "vocab_size", "architectures"])
def test_config_missing_keys_is_a_config_error(missing: str) -> None:
    cfg = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        parse_config(cfg)


def test_config_inconsistent_heads() -> None:
    with pytest.raises(ConfigError, match="multiple"):
        parse_config({**BASE, "num_key_value_heads": 3})


def test_bf16_round_trip_is_exact_for_bf16_values() -> None:
    x = np.array([1.0, -2.5, 3.14159, 1e-3, 65504.0, 0.0], dtype=np.float32)
    once = bf16_to_f32(f32_to_bf16(x))
    assert np.allclose(once, x, rtol=1e-2) and np.array_equal(bf16_to_f32(f32_to_bf16(once)), once)


def test_sharded_checkpoint_read_through_index(tiny_models) -> None:  # noqa: ANN001
    one = read_hf_model(tiny_models(shards=1))
    three = read_hf_model(tiny_models(shards=3))
    assert (three.path / "model.safetensors.index.json").is_file()
    assert set(one.tensor_infos()) == set(three.tensor_infos())
    files = {i.file.name for i in three.tensor_infos().values()}
    assert len(files) == 3
    for name in one.tensor_infos():
        assert np.array_equal(one.tensor(name), three.tensor(name))
    one.close()
    three.close()


def test_bf16_checkpoint_is_widened_to_float32(tiny_models) -> None:  # noqa: ANN001
    with read_hf_model(tiny_models(dtype="BF16")) as m:
        w = m.tensor("model.embed_tokens.weight")
        assert w.dtype == np.float32 and m.tensor_infos()["model.embed_tokens.weight"].dtype == "BF16"
        assert m.config.torch_dtype == "bfloat16"


def test_tokenizer_files_and_chat_template(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    src = tiny_models()
    with read_hf_model(src) as m:
        assert m.tokenizer_json is not None and "im_start" in (m.chat_template or "")
        assert m.special_token("eos_token") == "<|im_end|>"
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    (copy / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    with read_hf_model(copy) as m:
        assert m.chat_template == "{{ messages[0]['content'] }}"


def test_truncated_safetensors_is_refused_before_reading(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    bad = tmp_path / "bad"
    shutil.copytree(tiny_models(), bad)
    f = bad / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelFormatError, match="truncated"):
        read_hf_model(bad)


def test_garbage_header_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "x.safetensors"
    f.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelFormatError, match="header claims"):
        read_header(f)


def test_pickle_only_folder_is_refused_naming_safetensors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(BASE))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeCheckpointError, match="safetensors") as err:
        read_hf_model(tmp_path)
    assert "pytorch_model.bin" in str(err.value)


def test_index_naming_a_missing_shard(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    bad = tmp_path / "bad"
    shutil.copytree(tiny_models(shards=2), bad)
    next(bad.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(ModelFormatError, match="missing"):
        read_hf_model(bad)


def test_writer_refuses_out_of_order_tensors(tmp_path: Path) -> None:
    a = np.zeros((2, 2), np.float32)
    with pytest.raises(ModelFormatError, match="declared"):
        write_safetensors(tmp_path / "x.safetensors", [("a", "F32", (2, 2)), ("b", "F32", (2, 2))],
                          iter([("b", a), ("a", a)]))
    assert not list(tmp_path.iterdir())
