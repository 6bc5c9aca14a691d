"""The bandwidth probe runs inside the first edgellm.load on a machine: its buffers are part of that load's
peak, so they stay bounded (256 MiB in all, 1/16 of the available memory on a small board)."""
from __future__ import annotations

import pytest

from edgellm.devices.bandwidth import PROBE_BYTES, probe_bytes, run_probe


def test_probe_touches_at_most_its_budget() -> None:
    result = run_probe(2, budget_s=0.05)
    assert result.buffer_bytes * 2 <= probe_bytes() <= PROBE_BYTES and result.read_gbs > 0


def test_probe_budget_shrinks_with_the_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from edgellm.devices.cpu import detect_cpu

    small = replace(detect_cpu(), ram_available_bytes=320 << 20, cgroup_memory_limit_bytes=None)
    monkeypatch.setattr("edgellm.devices.cpu.detect_cpu", lambda: small)
    assert probe_bytes() == 32 << 20      # 320 MiB / 16 = 20 MiB, floored at 32 MiB
