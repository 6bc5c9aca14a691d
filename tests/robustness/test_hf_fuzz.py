"""Mutation fuzzing of what `convert` reads from an HF folder: safetensors headers, config.json and
tokenizer.json / tokenizer_config.json. Each mutant goes through the readers (bulk) or the full `convert`
(a sample); each must be converted or refused with an EdgeLLMError, within the time bound, and every artifact
that comes out must pass the GGUF validator."""
from __future__ import annotations

import json
import os
import random
import shutil
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import edgellm
from edgellm.converters.gguf_checks import validate_gguf
from edgellm.converters.hf import read_hf_model
from edgellm.converters.safetensors_io import MappedFile, read_header
from edgellm.converters.tokenizer import vocab_from_tokenizer_json
from tests.robustness.mutate import mutate_bytes, mutate_json, json_bytes
from tests.robustness.tally import assert_clean, classify

SCALE = float(os.environ.get("EDGELLM_FUZZ_SCALE", "1"))
CONFIG_KEYS = ["num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size", "vocab_size",
               "intermediate_size", "head_dim", "max_position_embeddings", "rope_scaling", "rope_theta",
               "rms_norm_eps", "bos_token_id", "eos_token_id", "tie_word_embeddings", "architectures",
               "rope_parameters", "torch_dtype", "text_config"]


@pytest.fixture()
def workdir(seed_hf: Path, fast_tmp: Path) -> Path:
    work = fast_tmp / "hf"
    shutil.copytree(seed_hf, work)
    return work


def convert_and_check(folder: Path, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    res = edgellm.convert(folder, out, format="gguf", quant="F32")
    validate_gguf(res.path)       # whatever we write must pass our own validator


def read_folder(folder: Path) -> None:
    with read_hf_model(folder) as m:
        vocab_from_tokenizer_json(m.tokenizer_json, m.config.vocab_size, m.tokenizer_config)
        _ = m.chat_template   # the property validates the template; reading it is the check
        for name in m.tensor_infos():
            np.asarray(m.tensor(name)).tobytes()


def _fuzz(name: str, n: int, n_convert: int, seed: int, write: Callable[[random.Random], None], folder: Path,
          out: Path) -> None:
    convert_and_check(folder, out)   # the unmutated seed converts (so refusals below are about the mutations)
    rng = random.Random(seed)
    for i in range(int(n * SCALE)):
        write(rng)
        if i < n_convert * SCALE:
            classify(f"{name} via convert", f"mutant {i}", lambda: convert_and_check(folder, out))
        else:
            classify(f"{name} via readers", f"mutant {i}", lambda: read_folder(folder))
    assert_clean(f"{name} via convert")
    assert_clean(f"{name} via readers")


def test_safetensors_mutants(workdir: Path, fast_tmp: Path) -> None:
    st = workdir / "model.safetensors"
    data = st.read_bytes()
    (hlen,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + hlen])
    body = data[8 + hlen:]

    def write(rng: random.Random) -> None:
        if rng.random() < 0.5:
            st.write_bytes(mutate_bytes(data, rng, [(0, 8)]))
        else:
            blob = json_bytes(mutate_json(header, rng), rng)
            st.write_bytes(struct.pack("<Q", len(blob)) + blob + body)

    _fuzz("safetensors", 1500, 300, 11, write, workdir, fast_tmp / "out")
    st.write_bytes(data)

    def header_only() -> None:
        tensors, _ = read_header(st)
        mf = MappedFile(st)
        try:
            for info in tensors.values():
                np.asarray(mf.view(info)).tobytes()
        finally:
            mf.close()

    rng = random.Random(12)
    for i in range(int(1000 * SCALE)):
        write(rng)
        classify("safetensors header reader", f"mutant {i}", header_only)
    assert_clean("safetensors header reader")


def test_config_mutants(workdir: Path, fast_tmp: Path) -> None:
    cfg_path = workdir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    scaled = {**cfg, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}

    def write(rng: random.Random) -> None:   # two seeds: plain, and with llama3 RoPE scaling to mutate inside
        seed = cfg if rng.random() < 0.6 else scaled
        cfg_path.write_bytes(json_bytes(mutate_json(seed, rng, CONFIG_KEYS), rng))

    _fuzz("config.json", 2000, 1200, 21, write, workdir, fast_tmp / "out")


def test_tokenizer_mutants(workdir: Path, fast_tmp: Path, seed_tokenizer: dict[str, Any]) -> None:
    tj, tc = workdir / "tokenizer.json", workdir / "tokenizer_config.json"
    tc_doc = json.loads(tc.read_text())
    small = dict(seed_tokenizer)

    def write(rng: random.Random) -> None:
        tj.write_text(json.dumps(seed_tokenizer))
        tc.write_text(json.dumps(tc_doc))
        if rng.random() < 0.7:
            tj.write_bytes(json_bytes(mutate_json(small, rng, ["added_tokens", "model", "pre_tokenizer"]), rng))
        else:
            tc.write_bytes(json_bytes(mutate_json(tc_doc, rng, ["chat_template", "bos_token", "eos_token",
                                                                "add_bos_token"]), rng))

    _fuzz("tokenizer json", 1200, 400, 31, write, workdir, fast_tmp / "out")
