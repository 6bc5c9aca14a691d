"""Mutation fuzzing of the GGUF reader and validator from a valid seed: every mutant is either accepted or
refused with an EdgeLLMError, quickly. Mutants hit the header's integer fields with interesting values
(counts, lengths, types, dimensions, offsets) as well as random bytes, truncations and splices."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from edgellm.converters.gguf_checks import check_gguf_metadata
from edgellm.converters.gguf_reading import metadata, open_gguf
from tests.robustness.gguf_seed import field_slots
from tests.robustness.mutate import mutate_bytes
from tests.robustness.native import native_loads
from tests.robustness.tally import assert_clean, classify

N_MUTANTS = int(os.environ.get("EDGELLM_FUZZ_GGUF", "4000"))


def read_everything(path: Path) -> None:
    f = open_gguf(path)
    try:
        check_gguf_metadata(f)
        metadata(f)
        for key in list(f.fields):
            f.fields[key]
        for t in f.tensors:
            np.asarray(t.data).tobytes()
    finally:
        f.close()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # mutated weights overflow when dequantized: expected
def test_gguf_mutants_are_accepted_or_typed(seed_gguf: Path, fast_tmp: Path) -> None:
    """Every mutant through the reader and validator; the ones they accept also through what runs on a GGUF
    before llama.cpp does: the planner and `edgellm info` (every 2nd), `edgellm unpack` back to HF (every 20th)."""
    import edgellm
    from edgellm.commands.info import describe
    from edgellm.planning import plan

    data = seed_gguf.read_bytes()
    slots = field_slots(data)
    rng = random.Random(20261202)
    target = fast_tmp / "m.gguf"
    for i in range(N_MUTANTS):
        target.write_bytes(mutate_bytes(data, rng, slots))
        if classify("gguf reader (mutants)", f"mutant {i}", lambda: read_everything(target)) != "accepted":
            continue
        if i % 2 == 0:
            classify("gguf planner+info (accepted mutants)", f"mutant {i}",
                     lambda: (plan(target, device="cpu", n_ctx=64), describe(str(target))))
        if i % 20 == 0:
            classify("gguf unpack (accepted mutants)", f"mutant {i}",
                     lambda: edgellm.unpack(target, fast_tmp / "hf", overwrite=True))
    assert_clean("gguf reader (mutants)")
    assert_clean("gguf planner+info (accepted mutants)")
    assert_clean("gguf unpack (accepted mutants)")


N_NATIVE = int(os.environ.get("EDGELLM_FUZZ_NATIVE", "10"))


def test_gguf_mutants_the_validator_accepts_load_natively_without_crashing(seed_gguf: Path, tmp_path: Path) -> None:
    """Mutants that pass validation are exactly the files llama.cpp gets to see: load each in a child process
    (edgellm.load + a few tokens), so an abort or a hang is counted rather than fatal."""
    from edgellm.converters.gguf_checks import validate_gguf
    from edgellm.errors import EdgeLLMError

    data = seed_gguf.read_bytes()
    slots = field_slots(data)
    rng = random.Random(7)
    picked: list[Path] = []
    for i in range(2000):
        if len(picked) >= N_NATIVE:
            break
        path = tmp_path / f"n{i}.gguf"
        path.write_bytes(mutate_bytes(data, rng, slots))
        try:
            validate_gguf(path)
        except EdgeLLMError:
            path.unlink()
            continue
        picked.append(path)
    assert len(picked) == N_NATIVE
    native_loads("native load: gguf mutants", picked)
    assert_clean("native load: gguf mutants")
