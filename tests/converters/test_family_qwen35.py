"""Qwen3.5 beyond the conformance table (tests/converters/test_families.py): the unpack round trip and the
multimodal wrapper the released checkpoints use."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_reading import open_gguf
from edgellm.converters.gguf_to_hf import gguf_to_hf
from edgellm.converters.hf import read_hf_model
from tests.converters.test_families import IDS, ROWS, llama_cpp_logits
from tests.fixtures.tiny import make_family_model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qwen35")
    return {"qwen35": make_family_model(root / "qwen35" / "model", ROWS["qwen35"], seed=7)}


def _gguf_tensors(path: Path) -> dict[str, tuple[str, bytes]]:
    return {t.name: (t.tensor_type.name, bytes(np.asarray(t.data).tobytes())) for t in open_gguf(path).tensors}


def test_qwen35_unpack_round_trips_bit_exactly(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """GGUF -> HF -> GGUF gives the same tensors bit for bit (ssm_a = -exp(A_log) is inverted to an A_log whose
    -exp is exactly ssm_a; the tiled value heads go back to HF's grouped order and return) and the same
    hybrid metadata, so llama.cpp computes the same logits."""
    first = convert_to_gguf(checkpoints["qwen35"], tmp_path / "g1", "F32").path
    back = gguf_to_hf(first, tmp_path / "back", dtype="F32")
    second = convert_to_gguf(back, tmp_path / "g2", "F32").path
    assert _gguf_tensors(first) == _gguf_tensors(second)
    r1, r2 = open_gguf(first), open_gguf(second)
    from edgellm.converters.gguf_reading import field_value

    for key in ("attention.recurrent_layers", "full_attention_interval", "rope.dimension_sections", "ssm.conv_kernel",
                "ssm.state_size", "ssm.group_count", "ssm.time_step_rank", "ssm.inner_size", "rope.dimension_count"):
        a, b = field_value(r1, f"qwen35.{key}"), field_value(r2, f"qwen35.{key}")
        assert a is not None and list(np.atleast_1d(a)) == list(np.atleast_1d(b)), key
    a, b = llama_cpp_logits(first, IDS), llama_cpp_logits(second, IDS)
    assert np.array_equal(a, b) and np.array_equal(a, llama_cpp_logits(first, IDS))   # and deterministic


def test_qwen35_multimodal_checkpoint_converts_its_text_model(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The released checkpoints are Qwen3_5ForConditionalGeneration: text weights under model.language_model.,
    config under text_config, a vision tower and an MTP head beside them (not converted). Same GGUF tensors as
    the text-only folder; a tensor outside those declared prefixes is still an error."""
    import json

    from edgellm.converters.safetensors_io import write_safetensors
    from edgellm.errors import ConversionError

    src, folder = checkpoints["qwen35"], tmp_path / "vl" / "model"
    folder.mkdir(parents=True)
    with read_hf_model(src) as m:
        tensors = {k.replace("model.", "model.language_model.", 1): np.array(m.tensor(k)) for k in m.tensor_infos()}
    tensors["model.visual.patch_embed.proj.weight"] = np.ones((4, 3), np.float32)
    tensors["mtp.fc.weight"] = np.ones((4, 4), np.float32)
    write_safetensors(folder / "model.safetensors", [(n, "F32", t.shape) for n, t in tensors.items()],
                      ((n, t.astype(np.float32)) for n, t in tensors.items()))
    text = json.loads((src / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen3_5ForConditionalGeneration"],
                                                    "model_type": "qwen3_5", "tie_word_embeddings": True,
                                                    "text_config": text, "vision_config": {"depth": 1}}))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (folder / f).write_bytes((src / f).read_bytes())
    want = _gguf_tensors(convert_to_gguf(src, tmp_path / "text", "F32").path)
    assert _gguf_tensors(convert_to_gguf(folder, tmp_path / "vl-gguf", "F32").path) == want
    tensors["model.audio_tower.weight"] = np.ones((2,), np.float32)
    write_safetensors(folder / "model.safetensors", [(n, "F32", t.shape) for n, t in tensors.items()],
                      ((n, t.astype(np.float32)) for n, t in tensors.items()))
    with pytest.raises(ConversionError, match="audio_tower"):
        convert_to_gguf(folder, tmp_path / "bad", "F32")
