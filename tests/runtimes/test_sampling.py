"""The numpy sampler: greedy, top-k/top-p/min-p, temperature, repeat penalty, seeds."""
from __future__ import annotations

import numpy as np
import pytest

from edgellm.runtimes.base import SamplingParams
from edgellm.runtimes.sampling import Sampler, apply_repeat_penalty

LOGITS = np.array([1.0, 3.0, 2.5, -1.0, 0.0], dtype=np.float32)


def test_greedy_is_argmax_and_ignores_seed():
    s = Sampler(SamplingParams(temperature=0.0, seed=123))
    assert s(LOGITS) == 1
    assert s.probabilities(LOGITS).tolist() == [0, 1, 0, 0, 0]


def test_top_k_one_and_tiny_top_p_pick_the_best():
    assert all(Sampler(SamplingParams(temperature=1.5, top_k=1, seed=i))(LOGITS) == 1 for i in range(20))
    p = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=0.01, min_p=0.0)).probabilities(LOGITS)
    assert p[1] == 1.0 and p.sum() == 1.0


def test_min_p_and_top_k_cut_the_tail():
    p = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.5)).probabilities(LOGITS)
    assert set(np.nonzero(p)[0]) == {1, 2}     # e^2.5/e^3 = 0.61 >= 0.5; e^1/e^3 < 0.5
    p = Sampler(SamplingParams(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0)).probabilities(LOGITS)
    assert set(np.nonzero(p)[0]) == {0, 1, 2}


def test_temperature_sampling_follows_softmax_and_seed_repeats():
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    draws = [Sampler(params)(LOGITS) for _ in range(3)]
    assert len(set(draws)) == 1                      # same seed, same first draw
    s = Sampler(params)
    counts = np.bincount([s(LOGITS) for _ in range(4000)], minlength=5) / 4000
    want = np.exp(LOGITS - LOGITS.max()) / np.exp(LOGITS - LOGITS.max()).sum()
    assert np.abs(counts - want).max() < 0.03


def test_repeat_penalty_llama_cpp_rule():
    out = apply_repeat_penalty(LOGITS, [1, 3, 1], 2.0, 64)
    assert out[1] == 1.5 and out[3] == -2.0 and out[2] == 2.5
    assert Sampler(SamplingParams(temperature=0.0, repeat_penalty=2.0))(LOGITS, [1]) == 2
    assert apply_repeat_penalty(LOGITS, [1], 1.0, 64) is LOGITS


def _reference_probabilities(params: SamplingParams, logits: np.ndarray, history=()) -> np.ndarray:
    """The straightforward full-vocabulary version (full stable sort for top-p) the fast sampler must equal."""
    x = apply_repeat_penalty(np.asarray(logits, dtype=np.float64), history, params.repeat_penalty,
                             params.repeat_last_n)
    keep = np.ones(x.shape, dtype=bool)
    if 0 < params.top_k < x.shape[-1]:
        keep &= x >= np.partition(x, -params.top_k)[-params.top_k]
    z = np.where(keep, x / params.temperature, -np.inf)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cut = int(np.searchsorted(np.cumsum(probs[order]), params.top_p)) + 1
        mask = np.zeros_like(keep)
        mask[order[:cut]] = True
        probs = np.where(mask, probs, 0.0)
    if params.min_p > 0.0:
        probs = np.where(probs >= params.min_p * probs.max(), probs, 0.0)
    return probs / probs.sum()


def test_fast_paths_equal_the_full_vocabulary_reference():
    rng = np.random.default_rng(0)
    vocab = 49152
    cases = [dict(top_k=40, top_p=0.95, min_p=0.05), dict(top_k=0, top_p=0.9, min_p=0.0),
             dict(top_k=0, top_p=0.999, min_p=0.0), dict(top_k=0, top_p=1.0, min_p=0.1),
             dict(top_k=5000, top_p=0.5, min_p=0.0), dict(top_k=1, top_p=1.0, min_p=0.0)]
    for i, case in enumerate(cases):
        for scale in (1.0, 4.0):
            logits = (rng.standard_normal(vocab) * scale).astype(np.float32)
            logits[rng.integers(0, vocab, 8)] = logits.max()          # ties at the top
            params = SamplingParams(temperature=0.7, repeat_penalty=1.1, seed=i, **case)
            history = rng.integers(0, vocab, 64).tolist()
            got = Sampler(params).probabilities(logits, history)
            want = _reference_probabilities(params, logits, history)
            assert np.array_equal(np.nonzero(got)[0], np.nonzero(want)[0]), case
            assert np.allclose(got, want, rtol=1e-9, atol=1e-12), case
            # the draw follows Generator.choice over the full distribution: same seed, same token
            fast = Sampler(params)
            ref = np.random.default_rng(params.seed)
            for _ in range(5):
                assert fast(logits, history) == int(ref.choice(vocab, p=want)), case


def test_sampling_over_a_real_vocabulary_is_fast():
    import time

    logits = np.random.default_rng(1).standard_normal(49152).astype(np.float32) * 3
    s = Sampler(SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=0))
    s(logits)
    t = time.perf_counter()
    for _ in range(50):
        s(logits, [1, 2, 3])
    assert (time.perf_counter() - t) / 50 < 0.005      # well under a decode step (the full sort took ~4 ms)


def test_non_finite_logits_never_index_out_of_range() -> None:
    import math

    from edgellm.errors import GenerationError

    row = np.array([0.1, math.nan, 2.0, math.inf, -math.inf], dtype=np.float32)
    for params in (SamplingParams(temperature=0.0), SamplingParams(temperature=0.7, seed=1),
                   SamplingParams(temperature=1e-30, top_k=0, top_p=1.0, min_p=0.0, seed=2)):
        assert Sampler(params)(row) == 3            # +inf wins, NaN never does
    for bad in (np.full(5, math.nan), np.full(5, -math.inf), np.array([], dtype=np.float32)):
        with pytest.raises(GenerationError, match="finite"):
            Sampler(SamplingParams(temperature=0.7, seed=1))(bad)
