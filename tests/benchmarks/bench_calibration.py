"""Benchmark: the GPTQ calibration pass (the default ONNX int4 recipe) on SmolLM2-135M, Gemma 3 270M and the
random-weight Llama-3.2-1B-shaped checkpoint, with a FLOP model of one layer that projects 7B.

Each conversion runs alone in a child process; wall seconds, CPU seconds (user + sys of the child) and peak
RSS (the child's ru_maxrss) come from os.wait4; the time spent in the decoder layers and in GPTQ proper comes
from the artifact's manifest (extra.calibration). Prints JSON lines and Markdown tables. Not part of the tests.

    nice -n 10 python tests/benchmarks/bench_calibration.py --models smollm2 gemma3 --repeat 3
    nice -n 10 python tests/benchmarks/bench_calibration.py --models 1b --repeat 1

The FLOP model of one calibrated layer (T tokens; per linear with N outputs, K inputs; per distinct input):
forward 2*T*N*K per linear + attention 4*T*S*H*hd (causal, half counted); Hessian T*K^2 (a symmetric product);
the factor U: K^3 (blocked Cholesky K^3/3 + triangular inverse 2K^3/3); GPTQ's trailing updates N*K^2; the
per-block MSE scale search ~ MSE_FLOP flops per weight. The layers of a model run at one rate, so
7B time = 7B layer FLOPs / (the 1B's measured FLOP rate) per layer, plus the LM head by the same rate.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


CHILD = """
import json, sys
from edgellm.converters.onnx import convert_to_onnx
src, out, quant, tokens, threads = sys.argv[1:6]
opts = {"calibration_tokens": int(tokens)}
if threads != "0":
    opts["threads"] = int(threads)
convert_to_onnx(src, out, quant, **opts)
"""


@dataclass(frozen=True)
class LayerShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied: bool = True

    def linears(self) -> list[tuple[int, int]]:
        """(N, K) of qkv, o, gate|up, down."""
        d, hd = self.hidden, self.head_dim
        return [((self.heads + 2 * self.kv_heads) * hd, d), (d, self.heads * hd), (2 * self.ffn, d),
                (d, self.ffn)]

    def layer_flops(self, tokens: int, seq: int = 512) -> dict[str, float]:
        lin = self.linears()
        inputs = [self.hidden, self.heads * self.head_dim, self.hidden, self.ffn]      # one Hessian per linear
        return {"forward": sum(2.0 * tokens * n * k for n, k in lin) + 2.0 * tokens * seq * self.heads * self.head_dim,
                "hessian": sum(float(tokens) * k * k for k in inputs),
                "factor": sum(float(k) ** 3 for k in inputs),
                "gptq": sum(float(n) * k * k for n, k in lin)}


SHAPES = {
    "smollm2": LayerShape(576, 30, 9, 3, 64, 1536, 49152),
    "gemma3": LayerShape(640, 18, 4, 1, 256, 2048, 262144),
    "1b": LayerShape(2048, 16, 32, 8, 64, 8192, 128256),
    "3b": LayerShape(3072, 28, 24, 8, 128, 8192, 128256),
    "7b": LayerShape(4096, 32, 32, 32, 128, 11008, 32000, tied=False),
}


def model_path(name: str, cache: Path) -> Path:
    if name == "smollm2":
        from tests.fixtures.smollm2 import smollm2_hf_dir
        return smollm2_hf_dir()
    if name == "gemma3":
        from tests.fixtures.gemma3 import gemma3_hf
        return gemma3_hf()
    from tests.fixtures.big_random import SHAPES as BIG, write_big_llama
    return write_big_llama(cache / name, BIG[name])


def measure(src: Path, quant: str, tokens: int, threads: int, scratch: Path) -> dict[str, object]:
    out = Path(tempfile.mkdtemp(prefix="bench-calib-", dir=scratch)) / "out"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(out), quant, str(tokens), str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")[-400:] if proc.stderr else ""
    cal: dict[str, object] = {}
    if rc == 0:
        cal = json.loads((out / "edgellm.json").read_text())["extra"].get("calibration") or {}
    shutil.rmtree(out.parent, ignore_errors=True)
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss": usage.ru_maxrss * 1024, "rc": rc, "calibration": cal, **({"error": err} if rc else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2", "gemma3"], choices=[s for s in SHAPES if s != "7b"])
    ap.add_argument("--quant", default="int4")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0, help="0: the converter's default (every core)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per model; the table shows medians")
    ap.add_argument("--cache", default=os.environ.get("EDGELLM_BIG_CACHE", str(Path(tempfile.gettempdir()) / "edgellm-big")))
    ap.add_argument("--src", nargs="*", default=[], metavar="MODEL=FOLDER",
                    help="use this HF folder for a model (e.g. an already rebuilt gemma3 folder)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--given", help="a JSON list of rows measured before (e.g. the 1B run), added to the tables")
    args = ap.parse_args()
    given = dict(item.split("=", 1) for item in args.src)
    rows = []
    for name in args.models:
        src = Path(given[name]) if name in given else model_path(name, Path(args.cache))
        runs = [measure(src, args.quant, args.tokens, args.threads, Path(args.cache)) for _ in range(args.repeat)]
        for r in runs:
            print(json.dumps({"model": name, **r}), flush=True)
        ok = [r for r in runs if r["rc"] == 0]
        if not ok:
            continue
        med = {k: statistics.median(float(r[k]) for r in ok) for k in ("wall_s", "cpu_s", "peak_rss")}  # type: ignore[arg-type]  # numbers
        cal = ok[len(ok) // 2]["calibration"]
        assert isinstance(cal, dict)
        rows.append({"model": name, "runs": len(ok), **med, "layers_s": cal.get("layers_s"),
                     "quantize_s": cal.get("quantize_s"), "tokens": cal.get("tokens")})
    if args.given:
        rows += json.loads(Path(args.given).read_text())
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\n| model | runs | wall s (median) | CPU s | peak RSS GB | decoder layers s | of which GPTQ s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['runs']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_rss'] / 1e9:.2f} | "
              f"{r['layers_s']} | {r['quantize_s']} |")
    print_projection(rows, args.tokens)


def machine_rates() -> tuple[float, float]:
    """(float32 matrix-product FLOP/s on one core, seconds per weight of the per-block MSE search), measured here
    with BLAS on one thread as the calibration pass runs it."""
    import numpy as np

    from edgellm.converters.calibration import blas_threads
    from edgellm.converters.quant import QuantSpec, quantize_blocks

    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    with blas_threads(1):
        best_mm = best_q = float("inf")
        for _ in range(3):
            c0 = time.process_time()
            a @ a
            best_mm = min(best_mm, time.process_time() - c0)
            c0 = time.process_time()
            quantize_blocks(a, QuantSpec("int4", "mse", 32))
            best_q = min(best_q, time.process_time() - c0)
    return 2.0 * 2048 ** 3 / best_mm, best_q / a.size


def layer_cpu_s(shape: LayerShape, tokens: int, rate: float, per_weight: float) -> float:
    f = shape.layer_flops(tokens)
    weights = sum(n * k for n, k in shape.linears())
    return (f["forward"] + f["hessian"] + f["factor"] + f["gptq"]) / rate + weights * per_weight


def head_cpu_s(shape: LayerShape, tokens: int, rate: float, per_weight: float) -> float:
    n, k = shape.vocab, shape.hidden
    return (tokens * k * k + k ** 3 + n * k * k) / rate + n * k * per_weight


def print_projection(rows: list[dict[str, object]], tokens: int) -> None:
    """The two-rate model (matrix products at the measured FLOP/s, the MSE search at the measured s/weight) per
    layer against the measured CPU seconds of the layers, and 3B/7B projected by it."""
    rate, per_weight = machine_rates()
    print(f"\nthis machine, one core: {rate / 1e9:.0f} GFLOP/s float32 products, {per_weight * 1e9:.0f} ns per "
          "weight in the MSE scale search")
    print("\n| model | layer GFLOP (fwd / Hessian / factor / GPTQ) | weights per layer (M) | model CPU s per layer "
          "| measured CPU s per layer |")
    print("|---|---|---|---|---|")
    scale = 1.0                           # measured / model of the largest model measured: what the model leaves out
    for r in sorted(rows, key=lambda r: sum(n * k for n, k in SHAPES[str(r["model"])].linears())):
        shape = SHAPES[str(r["model"])]
        f = shape.layer_flops(tokens)
        gemm = f["forward"] + f["hessian"] + f["factor"] + f["gptq"]
        weights = sum(n * k for n, k in shape.linears())
        share = float(r["layers_s"] or 0) / float(r["wall_s"])   # type: ignore[arg-type]  # numbers
        measured = float(r["cpu_s"]) * share / shape.layers        # type: ignore[arg-type]  # a number
        print(f"| {r['model']} | {gemm / 1e9:.0f} ({f['forward'] / 1e9:.0f} / {f['hessian'] / 1e9:.0f} / "
              f"{f['factor'] / 1e9:.0f} / {f['gptq'] / 1e9:.0f}) | {weights / 1e6:.0f} | "
              f"{layer_cpu_s(shape, tokens, rate, per_weight):.1f} | {measured:.1f} |")
        scale = measured / layer_cpu_s(shape, tokens, rate, per_weight)
    print(f"\nprojected with the model x {scale:.2f} (the largest measured model's measured / model ratio):")
    for big in ("3b", "7b"):
        s = SHAPES[big]
        layer, head = (scale * layer_cpu_s(s, tokens, rate, per_weight),
                       scale * head_cpu_s(s, tokens, rate, per_weight))
        total = layer * s.layers + head
        print(f"{big}: {layer:.0f} CPU s per layer x {s.layers} + LM head {head:.0f} = {total / 60:.0f} CPU min "
              f"(wall on 2 free cores about {total / 60 / 1.6:.0f}-{total / 60:.0f} min)")


if __name__ == "__main__":
    main()
