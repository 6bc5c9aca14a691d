"""The `emulated` marker (the qemu-aarch64 target run): registered here so tests/edge is self-contained."""
from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emulated: runs models under qemu-aarch64 in a Debian arm64 root "
                                       "(make arm64-check); long, selected only with -m emulated")
