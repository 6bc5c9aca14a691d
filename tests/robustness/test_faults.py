"""Faults while converting: a run killed at many points (a write-size limit makes the kernel kill the child with
SIGXFSZ in the middle of a write), a full disk (the same limit with the signal ignored: EFBIG), permission
errors, and OUT equal to or inside the source. A killed run leaves no artifact that claims to be complete; the
next run into the same OUT removes what it left and produces a valid artifact."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import signal
from pathlib import Path

import pytest

import edgellm
from edgellm.converters.gguf_checks import validate_gguf
from edgellm.errors import EdgeLLMError, OutputPathError
from edgellm.outputs import stale_partials
from tests.robustness.tally import assert_clean, row

GGUF_LIMITS = [0, 1, 64, 500, 2000, 4096, 8000, 16000, 24000, 32000, 48000, 64000, 80000, 100000]
ONNX_LIMITS = [0, 100, 1000, 10000, 30000, 60000, 100000, 200000]


def _child(src: str, out: str, fmt: str, quant: str, limit: int, ignore_signal: bool) -> None:
    # Python ignores SIGXFSZ at startup (a write past the limit then fails with EFBIG: the "disk full" case);
    # restoring the default makes the kernel kill the process in the middle of that write (the "kill -9" case).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN if ignore_signal else signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        edgellm.convert(src, out, format=fmt, quant=quant)
    except EdgeLLMError:
        os._exit(3)
    except BaseException:  # noqa: BLE001
        os._exit(4)
    os._exit(0)


def _run_limited(src: Path, out: Path, fmt: str, quant: str, limit: int, ignore_signal: bool = False) -> int | None:
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(str(src), str(out), fmt, quant, limit,
                                                                            ignore_signal))
    proc.start()
    proc.join(120)
    if proc.is_alive():
        proc.kill()
        return None
    return proc.exitcode


def _artifact_ok(out: Path) -> bool:
    """An OUT with a manifest must hold the complete file it names (size and sha256 as recorded)."""
    manifest = out / "edgellm.json"
    if not manifest.is_file():
        return True
    m = json.loads(manifest.read_text())
    path = out / m["file"]
    if not path.is_file() or not all((out / f).is_file() for f in m.get("files", [])):
        return False
    data = out / (m["file"] + ".data")
    size = path.stat().st_size + (data.stat().st_size if data.is_file() else 0)
    if m["size_bytes"] != size:            # the weights: GGUF file, or ONNX graph + external data
        return False
    if hashlib.sha256(path.read_bytes()).hexdigest() != m["sha256"]:
        return False
    if m["format"] == "gguf":
        validate_gguf(path)
    return all((out / f).is_file() for f in m.get("files", []))


@pytest.mark.parametrize("fmt,quant,limits", [("gguf", "F32", GGUF_LIMITS), ("onnx", "fp32", ONNX_LIMITS)])
def test_killed_runs_leave_no_corrupt_artifact_and_the_next_run_cleans_up(
        seed_hf: Path, tmp_path: Path, fmt: str, quant: str, limits: list[int]) -> None:
    r = row("kill points (convert)")
    cleaned = 0
    for limit in limits:
        out = tmp_path / f"out{limit}"
        code = _run_limited(seed_hf, out, fmt, quant, limit)
        r.inputs += 1
        if code is None:
            r.hangs += 1
            r.note(f"{fmt} limit {limit}: no exit")
            continue
        killed = code == -signal.SIGXFSZ
        if not killed and code not in (0, 3):
            r.untyped += 1
            r.note(f"{fmt} limit {limit}: exit {code}")
        if not _artifact_ok(out):
            r.escapes += 1
            r.note(f"{fmt} limit {limit}: a manifest names an incomplete artifact")
        cleaned += len(stale_partials(out))
        edgellm.convert(seed_hf, out, format=fmt, quant=quant, overwrite=True)   # the next run into the same OUT
        left = stale_partials(out)
        if left or not _artifact_ok(out):
            r.escapes += 1
            r.note(f"{fmt} limit {limit}: after the next run: leftovers {[p.name for p in left]}")
        else:
            r.accepted += 1
    assert_clean("kill points (convert)")
    assert cleaned > 0, "no kill point left a partial file: the cleanup was not exercised"


def test_at_least_20_kill_points() -> None:
    assert len(GGUF_LIMITS) + len(ONNX_LIMITS) >= 20


@pytest.mark.parametrize("fmt,quant", [("gguf", "F32"), ("onnx", "fp32")])
def test_full_disk_is_a_typed_error_and_leaves_nothing(seed_hf: Path, tmp_path: Path, fmt: str, quant: str) -> None:
    for limit in (0, 5000, 40000):
        out = tmp_path / f"full{limit}"
        assert _run_limited(seed_hf, out, fmt, quant, limit, ignore_signal=True) == 3
        assert not stale_partials(out)
        assert not (out / "edgellm.json").exists()


def test_permission_and_path_errors_are_typed(seed_hf: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker / "out", Path("/proc/edgellm-out"), Path("/dev/null/out")):
        for fmt, quant in (("gguf", "F32"), ("onnx", "fp32")):
            with pytest.raises(OutputPathError):
                edgellm.convert(seed_hf, out, format=fmt, quant=quant)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_equal_to_or_inside_the_source_is_refused(seed_hf: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(seed_hf, src)
    (tmp_path / "link").symlink_to(src)
    before = _tree_digest(src)
    for out in (src, src / "sub", src / "a" / "b", tmp_path / "link", tmp_path / "link" / "x"):
        for fmt, quant in (("gguf", "F32"), ("onnx", "fp32")):
            with pytest.raises(OutputPathError, match="source"):
                edgellm.convert(src, out, format=fmt, quant=quant)
    with pytest.raises(OutputPathError, match="source"):
        edgellm.bundle(src, src / "b.bundle", targets=["raspberry-pi-5"])
    assert _tree_digest(src) == before
