"""Named target profiles, loaded from profiles.json (data, validated field by field)."""
from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from edgellm.errors import BudgetError, ProfileError

from .budgets import parse_memory
from .types import PowerEnvelope, PreferredArtifact, Profile, ProfileGPU

log = logging.getLogger(__name__)

PROFILES_FILE = Path(__file__).with_name("profiles.json")
_FORMATS = ("gguf", "onnx")
# the runtime distributions a profile's `runtimes` field may pin (their versions gate the variants it can run)
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "llama-cpp-python")
_VERSION = re.compile(r"\d+(\.\d+){0,3}")


def _field(data: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...],
           check: Callable[[Any], bool] | None = None, need: str = "") -> Any:
    if key not in data:
        raise ProfileError(f"profile file: {where}: missing field '{key}'")
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wrong_bool = isinstance(value, bool) and bool not in kinds  # JSON true is not a count
    if wrong_bool or not isinstance(value, kinds) or (check is not None and not check(value)):
        raise ProfileError(f"profile file: {where}: field '{key}' must be {need or kind}, got {value!r}")
    return value


def _size(data: dict[str, Any], key: str, where: str) -> int:
    raw = _field(data, key, where, (str, int), need="a size such as '8GiB'")
    try:
        size = parse_memory(raw)
    except BudgetError as exc:
        raise ProfileError(f"profile file: {where}: field '{key}': {exc.message}") from None
    assert size is not None
    return size


def _positive(value: Any) -> bool:
    return value > 0


def _strings(value: Any) -> bool:
    return all(isinstance(v, str) for v in value)


def _parse_profile(name: str, data: Any) -> Profile:
    where = f"profiles.{name}"
    if not isinstance(data, dict):
        raise ProfileError(f"profile file: {where} must be an object, got {type(data).__name__}")
    num = (int, float)
    power = _field(data, "power", where, dict, need="an object")
    pw = f"{where}.power"
    preferred_raw = _field(data, "preferred", where, list, lambda v: len(v) > 0, "a non-empty list")
    preferred = []
    for i, item in enumerate(preferred_raw):
        pf = f"{where}.preferred[{i}]"
        if not isinstance(item, dict):
            raise ProfileError(f"profile file: {pf} must be an object")
        preferred.append(PreferredArtifact(
            format=_field(item, "format", pf, str, lambda v: v in _FORMATS, f"one of {_FORMATS}"),
            quant=_field(item, "quant", pf, str), runtime=_field(item, "runtime", pf, str),
            provider=_field(item, "provider", pf, str), note=str(item.get("note", ""))))
    gpu = None
    if data.get("gpu") is not None:
        g = _field(data, "gpu", where, dict, need="an object")
        gw = f"{where}.gpu"
        cc = g.get("compute_capability")
        if cc is not None and not (isinstance(cc, list) and len(cc) == 2 and all(isinstance(x, int) for x in cc)):
            raise ProfileError(f"profile file: {gw}: field 'compute_capability' must be [major, minor], got {cc!r}")
        gpu = ProfileGPU(name=_field(g, "name", gw, str), memory_shared=_field(g, "memory_shared", gw, bool),
                         compute_capability=(int(cc[0]), int(cc[1])) if cc else None,
                         bandwidth_gbs=float(_field(g, "bandwidth_gbs", gw, num, _positive, "a positive number")))
    cores_big = _field(data, "cores_big", where, int, lambda v: v >= 0, "a count >= 0")
    cores_little = _field(data, "cores_little", where, int, lambda v: v >= 0, "a count >= 0")
    threads = _field(data, "threads", where, int, _positive, "a positive count")
    if threads > cores_big + cores_little:
        raise ProfileError(f"profile file: {where}: field 'threads' ({threads}) exceeds the cores "
                           f"({cores_big} big + {cores_little} little)")
    ram = _size(data, "ram", where)
    app_memory = _size(data, "app_memory", where)
    if app_memory > ram:
        raise ProfileError(f"profile file: {where}: field 'app_memory' exceeds field 'ram'")
    runtimes = data.get("runtimes", {})
    if not isinstance(runtimes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _VERSION.fullmatch(v) for k, v in runtimes.items()):
        raise ProfileError(f"profile file: {where}: field 'runtimes' must map a runtime (onnxruntime, "
                           f"llama-cpp-python) to a version such as '1.23.2', got {runtimes!r}")
    unknown = sorted(set(runtimes) - set(RUNTIME_DISTRIBUTIONS))
    if unknown:
        raise ProfileError(f"profile file: {where}: field 'runtimes' names unknown runtime {unknown[0]!r}; known: "
                           + ", ".join(RUNTIME_DISTRIBUTIONS))
    return Profile(
        name=name, description=_field(data, "description", where, str),
        arch=_field(data, "arch", where, str, lambda v: v in ("aarch64", "x86_64"), "'aarch64' or 'x86_64'"),
        cores_big=cores_big, cores_little=cores_little, threads=threads, ram_bytes=ram, app_memory_bytes=app_memory,
        bandwidth_gbs=float(_field(data, "bandwidth_gbs", where, num, _positive, "a positive number")),
        isa=tuple(_field(data, "isa", where, list, _strings, "a list of feature names")),
        power=PowerEnvelope(**{k: float(_field(power, k, pw, num, lambda v: v >= 0, "a number >= 0"))
                               for k in ("idle_w", "active_w_per_big_core", "active_w_per_little_core", "max_w")}),
        preferred=tuple(preferred), gpu=gpu, runtimes=tuple(sorted(runtimes.items())))


def load_profiles(path: Path | None = None) -> dict[str, Profile]:
    """All profiles of a file (default: the packaged profiles.json). Malformed -> ProfileError naming the field."""
    if path is None:
        return dict(_load_default())
    return _load(Path(path))


@lru_cache(maxsize=1)
def _load_default() -> tuple[tuple[str, Profile], ...]:
    return tuple(_load(PROFILES_FILE).items())


def _load(path: Path) -> dict[str, Profile]:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ProfileError(f"cannot read profile file {path}: {exc}") from None
    except ValueError as exc:
        raise ProfileError(f"profile file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("profiles"), dict) or not raw["profiles"]:
        raise ProfileError(f"profile file {path}: missing field 'profiles' (an object of named profiles)")
    return {name: _parse_profile(name, data) for name, data in raw["profiles"].items()}


def get_profile(name: str, path: Path | None = None) -> Profile:
    profiles = load_profiles(path)
    if name not in profiles:
        raise ProfileError(f"unknown profile {name!r}; known profiles: {', '.join(sorted(profiles))}")
    return profiles[name]
