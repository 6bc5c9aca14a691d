import json

from edgellm.devices.threads import default_candidates, pick_threads


def curve(peak: int):
    calls = []

    def measure(threads: int) -> float:
        calls.append(threads)
        return 100.0 * min(threads, peak) - 15.0 * max(0, threads - peak)

    return measure, calls


def test_sweep_stops_when_tokens_per_s_falls(tmp_path):
    measure, calls = curve(peak=3)
    choice = pick_threads(measure, [1, 2, 3, 4, 6, 8, 12], cache_file=tmp_path / "t.json")
    assert choice.threads == 3 and choice.tokens_per_s == 300.0
    assert calls == [1, 2, 3, 4] and "stopped at 4" in choice.reason


def test_choice_is_cached_per_key(tmp_path):
    cache = tmp_path / "threads.json"
    measure, calls = curve(peak=2)
    first = pick_threads(measure, [1, 2, 4], key="smol:123", cache_file=cache)
    again = pick_threads(measure, [1, 2, 4], key="smol:123", cache_file=cache)
    assert not first.cached and again.cached and again.threads == first.threads == 2
    assert calls == [1, 2, 4]  # the second call measured nothing
    assert len(json.loads(cache.read_text())) == 1
    other = pick_threads(curve(peak=1)[0], [1, 2, 4], key="other:1", cache_file=cache)
    assert other.threads == 1 and not other.cached


def test_default_candidates():
    assert default_candidates(1) == (1,)
    assert default_candidates(16) == (1, 2, 3, 4, 6, 9, 13, 16)[:0] or default_candidates(16)[-1] == 16
    assert default_candidates(8)[:4] == (1, 2, 3, 4) and default_candidates(8)[-1] == 8
