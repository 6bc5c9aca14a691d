"""The llama.cpp kernel probe: run each quant family once in a child process before trusting it in ours.

The first time a llama.cpp build meets a CPU, a tiny random Llama (converters.synthetic) is written in F32
and quantized to one model per family (every weight matrix of that family's type), and each quantized model
is dequantized back into an F32 twin: the same weights, so any difference between the two is the kernels'
(activation rounding, a few per cent), not the quantization's. Child processes run each model with
llama.cpp's default CPU kernels and with the safe switch (extra buffer types off), and the twins on the plain
F32 path: a 24-token prefill (the batched matmul kernels) and four single-token steps (the vector kernels).
A child that dies by a signal or hangs, or logits further than TOLERANCE from the twin's, mark that family
bad; `runtimes.llama_native` then opens models
holding that family with the safe switch (or refuses them when the safe path is bad too). Verdicts are cached
per machine, CPU and llama.cpp build, so the probe runs once.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .runtimes.llama_native import Verdict, read_verdicts, write_verdicts

log = logging.getLogger(__name__)

# GGML type family -> the quant recipe that writes it (with the quantizer's `pure` flag: one type throughout).
FAMILIES: dict[str, str] = {
    "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0",
    "Q2_K": "Q2_K", "Q3_K": "Q3_K_S", "Q4_K": "Q4_K_S", "Q5_K": "Q5_K_S", "Q6_K": "Q6_K",
    "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS", "F16": "F16", "BF16": "BF16",
}
PROMPT = tuple((i * 37 + 11) % 256 for i in range(24))  # byte tokens of the synthetic vocabulary
DECODE_STEPS = 4
CHILD_TIMEOUT_S = 120.0
# relative L2 error of the logits vs the F32 twin above which a kernel is "wrong" (measured here: <= 0.02)
TOLERANCE = 0.15


@dataclass(frozen=True)
class ProbeReport:
    verdicts: tuple[Verdict, ...]
    cache_path: Path
    seconds: float

    @property
    def bad(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.default_bad]

    def table(self) -> str:
        rows = ["| family | default kernels | safe switch | error vs F32 twin (default / safe) | used |",
                "|---|---|---|---|---|"]
        for v in self.verdicts:
            err = " / ".join(f"{v.rel_error[k]:.3f}" if k in v.rel_error else "-" for k in ("default", "safe"))
            used = "refused" if v.default_bad and v.safe_bad else "safe switch" if v.default_bad else "default"
            rows.append(f"| {v.family} | {v.default} | {v.safe} | {err} | {used} |")
        return "\n".join(rows)


# -- child side ---------------------------------------------------------------------------------------------------
def child_main(argv: Sequence[str] | None = None, tamper: Callable[[str, list[list[float]]], None] | None = None) -> int:
    """Run each model: one JSON line per model on stdout ({"family", "logits"}), "start" lines before each.

    `tamper(family, rows)` is for tests that stand in for a defective CPU (it may crash or alter rows)."""
    from .runtimes.llama_native import KernelPolicy, open_llama

    try:  # a kernel that crashes here is expected: leave no core file behind
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=("default", "safe"), required=True)
    ap.add_argument("models", nargs="+", help="FAMILY=PATH")
    args = ap.parse_args(argv)
    policy = KernelPolicy(use_extra_bufts=args.config == "default")
    threads = max(1, min(2, os.cpu_count() or 1))
    for item in args.models:
        family, _, path = item.partition("=")
        print(json.dumps({"start": family}), flush=True)
        llm = open_llama(path, policy=policy, n_ctx=64, n_batch=64, n_threads=threads, n_threads_batch=threads,
                         logits_all=True)
        rows: list[list[float]] = []
        llm.eval(list(PROMPT))
        rows.append([float(x) for x in llm.scores[llm.n_tokens - 1]])
        for step in range(DECODE_STEPS):
            llm.eval([PROMPT[step]])
            rows.append([float(x) for x in llm.scores[llm.n_tokens - 1]])
        llm.close()
        if tamper is not None:
            tamper(family, rows)
        print(json.dumps({"family": family, "logits": rows}), flush=True)
    return 0


# -- parent side --------------------------------------------------------------------------------------------------
def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _run_children(child: Sequence[str], config: str, models: dict[str, Path]) -> dict[str, list[list[float]] | str]:
    """Logits per family, or a failure string ("crash:SIGSEGV", "hang", "error:..."). A child that dies is
    replaced by a new one for the families it did not reach."""
    results: dict[str, list[list[float]] | str] = {}
    pending = list(models)
    while pending:
        cmd = [*child, "--config", config, *(f"{f}={models[f]}" for f in pending)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                                  env={**os.environ, "EDGELLM_KERNEL_PROBE": "0"})
            out, code, hung = proc.stdout, proc.returncode, False
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            code, hung = 0, True
        started: str | None = None
        for line in out.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "start" in msg:
                started = msg["start"]
            elif msg.get("family") in models:
                results[msg["family"]] = msg["logits"]
                started = None
        pending = [f for f in pending if f not in results]
        if not pending:
            break
        culprit = started if started in pending else pending[0]
        if hung:
            results[culprit] = "hang"
        elif code < 0:
            results[culprit] = f"crash:{_signal_name(code)}"
        else:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
            results[culprit] = f"error:{tail}"
        pending = [f for f in pending if f != culprit]
    return results


def _rel_error(got: list[list[float]], want: list[list[float]]) -> float:
    num = den = 0.0
    for row_g, row_w in zip(got, want):
        for g, w in zip(row_g, row_w):
            num += (g - w) ** 2
            den += w * w
    if len(got) != len(want) or not math.isfinite(num):
        return math.inf
    return math.sqrt(num / max(den, 1e-30))


def _judge(result: list[list[float]] | str, reference: list[list[float]] | str) -> tuple[str, float | None]:
    if isinstance(result, str):
        return result, None
    if isinstance(reference, str):
        return f"unjudged (F32 twin {reference})", None
    err = _rel_error(result, reference)
    return ("ok" if err <= TOLERANCE else f"wrong:{err:.3g}"), err


def dequantized_twin(src: Path, dst: Path) -> Path:
    """`src` with every tensor dequantized to F32 (same metadata): the reference for its kernels."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(dst), arch)
    for name, fld in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        sub = fld.types[1] if len(fld.types) > 1 else None
        writer.add_key_value(name, fld.contents(), fld.types[0], sub)
    writer.add_file_type(0)
    for t in reader.tensors:  # numpy order: [rows, ne0]
        writer.add_tensor(t.name, gguf.quants.dequantize(t.data, t.tensor_type).astype("float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def build_probe_models(folder: Path, families: Sequence[str] = tuple(FAMILIES)) -> dict[str, tuple[Path, Path]]:
    """family -> (quantized model, its F32 twin), written under `folder`."""
    from .converters.gguf import convert_to_gguf
    from .converters.gguf_types import get_quant
    from .converters.llama_quantize import quantize_gguf
    from .converters.synthetic import write_tiny_llama

    hf = write_tiny_llama(folder / "hf")
    f32 = convert_to_gguf(hf, folder / "f32", "F32").path
    models = {}
    for fam in families:
        dst = folder / f"probe-{fam}.gguf"
        quantize_gguf(f32, dst, get_quant(FAMILIES[fam]).file_type, threads=1, pure=True)
        models[fam] = (dst, dequantized_twin(dst, folder / f"twin-{fam}.gguf"))
    return models


def default_child() -> list[str]:
    return [sys.executable, "-m", "edgellm.kernel_probe"]


def run_probe(*, child: Sequence[str] | None = None, families: Sequence[str] = tuple(FAMILIES),
              cache_path: Path | None = None) -> ProbeReport:
    """Probe every family in child processes, cache the verdicts, warn once for each bad family."""
    import time

    t0 = time.perf_counter()
    child = list(child or default_child())
    with tempfile.TemporaryDirectory(prefix="edgellm-probe-") as tmp:
        models = build_probe_models(Path(tmp), families)
        twins = _run_children(child, "safe", {f: twin for f, (_, twin) in models.items()})
        runs = {cfg: _run_children(child, cfg, {f: q for f, (q, _) in models.items()}) for cfg in ("default", "safe")}
        verdicts = []
        for fam in families:
            default, default_err = _judge(runs["default"][fam], twins[fam])
            safe, safe_err = _judge(runs["safe"][fam], twins[fam])
            errs = {k: e for k, e in (("default", default_err), ("safe", safe_err)) if e is not None}
            verdicts.append(Verdict(fam, default, safe, errs))
    path = write_verdicts(verdicts, cache_path)
    report = ProbeReport(tuple(verdicts), path, time.perf_counter() - t0)
    for v in report.bad:
        action = "refused on this host" if v.safe_bad else "opened with extra buffer types off"
        log.warning("llama.cpp kernel probe: %s %s with default kernels on this CPU; models with %s tensors are %s",
                    v.family, v.default, v.family, action)
    return report


_GAVE_UP: list[str] = []  # this process could not probe (and says why once)


def ensure_probed() -> None:
    """Run the probe once per machine and llama.cpp build (EDGELLM_KERNEL_PROBE=0 skips it; known defects
    still apply). A frozen app (PyInstaller and the like) has no interpreter to start children with, and a cache
    that cannot be written must not fail the load: both skip the probe, with one warning."""
    if _GAVE_UP or os.environ.get("EDGELLM_KERNEL_PROBE", "1") == "0" or read_verdicts() is not None:
        return
    if getattr(sys, "frozen", False):
        _give_up("a frozen app cannot start the probe's child interpreter; run `edgellm devices --probe` once "
                 "with the same llama.cpp build, or set EDGELLM_KERNEL_PROBE=0")
        return
    log.info("probing llama.cpp's CPU kernels on this machine (once per llama.cpp build)")
    try:
        run_probe()
    except OSError as exc:
        _give_up(f"its verdicts cannot be cached ({exc}); set EDGELLM_CACHE_DIR to a writable folder")


def _give_up(why: str) -> None:
    _GAVE_UP.append(why)
    log.warning("llama.cpp kernel probe skipped: %s. Known kernel defects still apply.", why)


if __name__ == "__main__":
    sys.exit(child_main())
