"""Benchmark: GGUF K-quant conversion, edgellm's pipeline vs llama.cpp's, alternating runs, medians.

edgellm: `edgellm convert MODEL OUT --format gguf --quant Q4_K_M --imatrix off` (an intermediate GGUF in the
checkpoint's precision, then llama.cpp's quantizer in-process). Peer: llama.cpp's pipeline, convert_hf_to_gguf.py
to F16 then llama-quantize. Where convert_hf_to_gguf.py cannot run (it needs torch) the peer's convert step is
edgellm's own F16 writer (measured ~0.73x convert_hf_to_gguf's time at 1B in issue 17, so this favours the peer),
and its quantize step is the function llama-quantize calls, `llama_model_quantize`, with llama-quantize's
defaults (nthread 0 = all hardware threads), from libllama in-process. Each step is a child process under
`/usr/bin/time -v`: wall, user+sys CPU seconds and peak RSS. Not part of the test run.

    nice -n 5 python tests/benchmarks/bench_quantize_pipeline.py /tmp/big/1b --work /tmp/big/q --pairs 3
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

PEER_QUANTIZE = r"""
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
params.nthread = 0            # llama-quantize's default: std::thread::hardware_concurrency()
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params)
sys.exit(rc)
"""
FTYPES = {"Q4_K_M": 15, "Q4_K_S": 14, "Q5_K_M": 17, "Q6_K": 18, "Q4_0": 2, "Q8_0": 7}


def timed(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[:1500]}")

    def field(pattern: str) -> str:
        m = re.search(pattern, proc.stderr)
        return m.group(1) if m else "0"
    wall = field(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)")
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"wall_s": seconds, "cpu_s": float(field(r"User time \(seconds\): ([\d.]+)"))
            + float(field(r"System time \(seconds\): ([\d.]+)")),
            "peak_rss": int(field(r"Maximum resident set size \(kbytes\): (\d+)")) * 1024}


def edgellm_run(model: Path, out: Path, quant: str, threads: int | None) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "edgellm.cli", "convert", str(model), str(out), "--format", "gguf", "--quant",
           quant, "--imatrix", "off", "--overwrite"] + (["--threads", str(threads)] if threads else [])
    r = timed(cmd)
    shutil.rmtree(out, ignore_errors=True)
    return r


def peer_run(model: Path, work: Path, quant: str) -> dict[str, Any]:
    f16 = work / "peer-f16"
    shutil.rmtree(f16, ignore_errors=True)
    convert = timed([sys.executable, "-m", "edgellm.cli", "convert", str(model), str(f16), "--format", "gguf",
                     "--quant", "F16", "--overwrite"])
    src = next(f16.glob("*.gguf"))
    dst = work / "peer-out.gguf"
    quantize = timed([sys.executable, "-c", PEER_QUANTIZE, str(src), str(dst), str(FTYPES[quant])])
    dst.unlink(missing_ok=True)
    shutil.rmtree(f16, ignore_errors=True)
    return {"wall_s": convert["wall_s"] + quantize["wall_s"], "cpu_s": convert["cpu_s"] + quantize["cpu_s"],
            "peak_rss": max(convert["peak_rss"], quantize["peak_rss"]), "convert": convert, "quantize": quantize}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--quant", default="Q4_K_M", choices=sorted(FTYPES))
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="edgellm's --threads (default: its own)")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    ours: list[dict[str, Any]] = []
    peer: list[dict[str, Any]] = []
    for i in range(args.pairs):   # alternate, starting with each side in turn
        order = (("edgellm", "peer") if i % 2 == 0 else ("peer", "edgellm"))
        for side in order:
            if side == "edgellm":
                ours.append(edgellm_run(args.model, args.work / "ours", args.quant, args.threads))
                print(json.dumps({"edgellm": ours[-1]}), flush=True)
            else:
                peer.append(peer_run(args.model, args.work, args.quant))
                print(json.dumps({"peer": peer[-1]}), flush=True)

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)
    print(f"\n| {args.quant} | wall s (median of {args.pairs}) | CPU s user+sys | peak RSS |\n|---|---|---|---|")
    print(f"| edgellm | {med(ours, 'wall_s'):.1f} | {med(ours, 'cpu_s'):.1f} | {med(ours, 'peak_rss') / 1e9:.2f} GB |")
    print(f"| peer (F16 convert + llama_model_quantize) | {med(peer, 'wall_s'):.1f} | {med(peer, 'cpu_s'):.1f} | "
          f"{med(peer, 'peak_rss') / 1e9:.2f} GB |")
    print(f"| ratio | {med(ours, 'wall_s') / med(peer, 'wall_s'):.2f}x | {med(ours, 'cpu_s') / med(peer, 'cpu_s'):.2f}x"
          " | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
