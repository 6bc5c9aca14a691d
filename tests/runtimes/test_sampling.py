"""The numpy sampler: greedy, top-k/top-p/min-p, temperature, repeat penalty, seeds."""
from __future__ import annotations

import numpy as np

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
