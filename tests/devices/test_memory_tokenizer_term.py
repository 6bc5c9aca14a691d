"""The ONNX estimate's tokenizer term counts what the runtime's tokenizer holds (tokenizer.json's vocabulary and
added tokens), not the embedding's rows: issue 17's 1B random checkpoint pads a 262-entry byte-level tokenizer to
a 128256-row embedding, and the plan counted 83 MiB of tokenizer tables that never exist."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgellm.devices.memory import ORT_TOKENIZER_BYTES_PER_VOCAB_ENTRY
from edgellm.planning import plan, read_model_facts


def test_tokenizer_term_follows_the_tokenizer_not_the_embedding(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    pytest.importorskip("onnx")
    from edgellm.converters.onnx import convert_to_onnx

    folder = tiny_models()
    out = tmp_path / "int4"
    convert_to_onnx(folder, out, quant="int4-rtn")
    doc = json.loads((out / "tokenizer.json").read_text())
    entries = len(doc["model"]["vocab"]) + sum(t["content"] not in doc["model"]["vocab"] for t in doc["added_tokens"])
    facts = read_model_facts(out)
    assert facts.tokenizer_entries == entries and entries != facts.vocab_size   # the tiny model pads its embedding
    p = plan(out, device="cpu", n_ctx=256)
    assert p.memory.term("tokenizer") == ORT_TOKENIZER_BYTES_PER_VOCAB_ENTRY * entries
    assert read_model_facts(folder).tokenizer_entries == entries                 # the HF folder plans the same term
