"""Mutation fuzzing of an ONNX artifact's side files (genai_config.json, tokenizer_config.json, tokenizer.json)
through `edgellm.load` + generate + chat, and of model.onnx itself in child processes (onnxruntime is native)."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import edgellm
from tests.robustness.mutate import json_bytes, mutate_bytes, mutate_json
from tests.robustness.native import native_loads
from tests.robustness.tally import assert_clean, classify

N_JSON = int(150 * float(os.environ.get("EDGELLM_FUZZ_SCALE", "1")))
FILES = {"genai_config.json": ["model", "search"], "tokenizer_config.json": ["bos_token", "eos_token", "chat_template",
                                                                            "add_bos_token"],
         "tokenizer.json": ["model", "added_tokens", "decoder", "pre_tokenizer"]}


def _use(folder: Path) -> None:
    with edgellm.load(folder / "model.onnx", device="cpu", n_ctx=64, threads=1) as model:
        model.generate("Hello", max_tokens=2, temperature=0.5, seed=1)
        model.chat([{"role": "user", "content": "hi"}], max_tokens=1)


def test_onnx_side_file_mutants(seed_onnx: Path, fast_tmp: Path) -> None:
    work = fast_tmp / "art"
    shutil.copytree(seed_onnx, work)
    originals = {name: (work / name).read_bytes() for name in FILES}
    docs = {name: json.loads(raw) for name, raw in originals.items()}
    _use(work)   # the unmutated copy loads and generates
    rng = random.Random(17)
    for i in range(N_JSON):
        for name, raw in originals.items():
            (work / name).write_bytes(raw)
        name = rng.choice(list(FILES))
        if rng.random() < 0.8:
            (work / name).write_bytes(json_bytes(mutate_json(docs[name], rng, FILES[name]), rng))
        else:
            (work / name).write_bytes(mutate_bytes(originals[name], rng))
        classify("onnx artifact side files", f"{name} mutant {i}", lambda: _use(work), hang_s=4.0)
    assert_clean("onnx artifact side files")


def test_onnx_graph_mutants_in_child_processes(seed_onnx: Path, tmp_path: Path) -> None:
    rng = random.Random(23)
    raw = (seed_onnx / "model.onnx").read_bytes()
    folders = []
    for i in range(int(os.environ.get("EDGELLM_FUZZ_NATIVE_ONNX", "4"))):
        folder = tmp_path / f"g{i}"
        shutil.copytree(seed_onnx, folder)
        (folder / "model.onnx").write_bytes(mutate_bytes(raw, rng))
        folders.append(folder / "model.onnx")
    native_loads("native load: onnx graph mutants", folders)
    assert_clean("native load: onnx graph mutants")
