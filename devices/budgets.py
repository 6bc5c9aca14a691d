"""Parse budget strings: memory ("2GiB", "512MB", "1.5G", 1048576), speed ("20", "20tok/s"), quality ("0.05", "5%")."""
from __future__ import annotations

import re

from edgellm.errors import BudgetError

# Unit -> bytes. Binary units (KiB, MiB, ...) and decimal ones (KB, MB, ...); a bare K/M/G/T is binary,
# as in `free -g`, docker `--memory 2g` and llama.cpp's own logs.
_MEMORY_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 1000,
    "m": 1 << 20, "mib": 1 << 20, "mb": 1000**2,
    "g": 1 << 30, "gib": 1 << 30, "gb": 1000**3,
    "t": 1 << 40, "tib": 1 << 40, "tb": 1000**4,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_SPEED = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(?:tok(?:ens)?/s|t/s|tps)?\s*$", re.IGNORECASE)
_QUALITY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")


def parse_memory(value: str | int | float | None) -> int | None:
    """Bytes from a memory budget; None stays None. Raises BudgetError on anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BudgetError(f"memory budget must be a size such as '2GiB', got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _NUMBER_UNIT.match(str(value))
        if not match:
            raise BudgetError(f"cannot parse memory budget {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _MEMORY_UNITS:
        known = ", ".join(u for u in ("B", "KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", "TB", "K", "M", "G"))
        raise BudgetError(f"unknown memory unit {unit!r} in {value!r}; known units: {known}")
    size = int(number * _MEMORY_UNITS[unit])
    if size <= 0:
        raise BudgetError(f"memory budget must be positive, got {value!r}")
    return size


def parse_speed(value: str | int | float | None) -> float | None:
    """Tokens/s from a speed budget ("20", "20 tok/s", 12.5); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BudgetError(f"speed budget must be a number of tokens/s, got {value!r}")
    if isinstance(value, (int, float)):
        speed = float(value)
    else:
        match = _SPEED.match(str(value))
        if not match:
            raise BudgetError(f"cannot parse speed budget {value!r}; write tokens/s such as '20' or '20tok/s'")
        speed = float(match.group(1))
    if speed <= 0:
        raise BudgetError(f"speed budget must be positive, got {value!r}")
    return speed


def parse_quality_loss(value: str | int | float | None) -> float | None:
    """Fraction of quality loss allowed ("0.05", "5%"); None stays None. Must lie in [0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BudgetError(f"quality-loss budget must be a fraction such as 0.05 or '5%', got {value!r}")
    if isinstance(value, (int, float)):
        loss = float(value)
    else:
        match = _QUALITY.match(str(value))
        if not match:
            raise BudgetError(f"cannot parse quality-loss budget {value!r}; write 0.05 or '5%'")
        loss = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
    if not 0.0 <= loss <= 1.0:
        raise BudgetError(f"quality-loss budget must lie between 0 and 1 (or 0% and 100%), got {value!r}")
    return loss


def format_bytes(size: int | float) -> str:
    """Human size in binary units, e.g. 1.50 GiB (for messages and tables)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024.0:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024.0
    return f"{value:.2f} TiB"
