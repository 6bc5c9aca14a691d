"""edgellm.load refuses bad n_ctx and threads before planning or opening anything (OptionError, both runtimes)."""
from __future__ import annotations

from pathlib import Path

import pytest

import edgellm
from edgellm.errors import OptionError


@pytest.fixture(scope="module")
def tiny_gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgellm.kernel_probe import build_probe_models

    return build_probe_models(tmp_path_factory.mktemp("opts"), ["F16"])["F16"][0]


@pytest.mark.parametrize("n_ctx", [0, -1, 2.5, True, "512"])
def test_bad_n_ctx_is_refused_not_replaced_by_a_default(tiny_gguf_file: Path, n_ctx: object) -> None:
    with pytest.raises(OptionError, match="n_ctx"):
        edgellm.load(tiny_gguf_file, n_ctx=n_ctx)  # type: ignore[arg-type]  # the bad value is the point


@pytest.mark.parametrize("threads", [0, -2, 2.5, False, "x"])
def test_bad_threads_are_refused_before_the_device_cap_applies(tiny_gguf_file: Path, threads: object) -> None:
    with pytest.raises(OptionError, match="threads"):
        edgellm.load(tiny_gguf_file, threads=threads)  # type: ignore[arg-type]  # the bad value is the point


def test_good_values_load(tiny_gguf_file: Path) -> None:
    with edgellm.load(tiny_gguf_file, n_ctx=64, threads=1) as model:
        assert model.n_ctx == 64
        assert len(model.generate([5, 6, 7], max_tokens=2, temperature=0.0).tokens) == 2


def test_stream_logprobs_match_teacher_forced_logits(tiny_gguf_file: Path) -> None:
    import numpy as np

    prompt = [5, 17, 99, 3, 42]
    with edgellm.load(tiny_gguf_file, n_ctx=64, threads=1) as model:
        chunks = [c for c in model.stream(prompt, max_tokens=4, temperature=0.0, logprobs=4) if c.token is not None]
        assert len(chunks) == 4
        logits = model.logits(prompt + [c.token for c in chunks]).astype(np.float64)
        for i, c in enumerate(chunks):
            row = logits[len(prompt) - 1 + i]
            want = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
            assert abs(c.logprob - want[c.token]) < 2e-3
            assert [t for t, _ in c.top_logprobs] == list(np.argsort(-want)[:4])
            assert c.top_logprobs[0][0] == c.token  # greedy
        with pytest.raises(OptionError, match="logprobs"):
            next(iter(model.stream(prompt, max_tokens=1, logprobs=21)))
