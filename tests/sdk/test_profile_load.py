import os

import pytest


@pytest.mark.slow
def test_load_under_profile_honours_thread_cap(smollm2_gguf):
    import edgellm
    from edgellm.loading import _device

    label, cap = _device("profile:raspberry-pi-5")
    assert label == "profile:raspberry-pi-5" and cap == min(4, os.cpu_count() or 1)
    model = edgellm.load(smollm2_gguf("Q4_K_M"), device="profile:raspberry-pi-5", threads=64, n_ctx=256)
    try:
        assert model.runtime.threads == cap  # threads=64 was asked; the profile caps it
    finally:
        close = getattr(model, "close", None)
        if close:
            close()
