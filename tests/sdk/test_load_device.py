"""edgellm.load() plans the artifact on the device first: what cannot fit is refused before loading."""
from __future__ import annotations

import time

import pytest

import edgellm
from edgellm.errors import InsufficientMemoryError


@pytest.mark.slow
def test_model_too_big_for_profile_is_refused_before_loading(smollm2_artifact) -> None:  # noqa: ANN001
    t0 = time.perf_counter()
    with pytest.raises(InsufficientMemoryError) as err:
        edgellm.load(smollm2_artifact("F16"), device="profile:raspberry-pi-zero-2w", n_ctx=512)
    message = str(err.value)
    assert "needs" in message and "MiB but" in message and "available" in message and "320.00 MiB" in message
    assert time.perf_counter() - t0 < 5  # refused from the header alone, nothing was loaded


@pytest.mark.slow
def test_smaller_quant_loads_under_the_same_profile_with_its_thread_cap(smollm2_artifact) -> None:  # noqa: ANN001
    with edgellm.load(smollm2_artifact("Q8_0"), device="profile:raspberry-pi-zero-2w", n_ctx=512,
                      threads=16) as model:
        assert model.device == "profile:raspberry-pi-zero-2w"
        assert model.runtime.threads <= 4
        assert model.generate("Hello", max_tokens=4, temperature=0.0).metrics.generated_tokens == 4
