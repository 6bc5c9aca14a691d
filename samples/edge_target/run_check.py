"""The emulated ARM64 target run, end to end (what `make arm64-check` runs).

1. build the Debian bookworm aarch64 root (build_root.sh) and cross-build llama.cpp (cross_build_llama.sh);
2. bundle SmolLM2's ARM variants: GGUF Q4_0 (raspberry-pi-5) and ONNX int4 (android-midrange), from the cached
   test artifacts;
3. write the edge image (edgellm.edge_image) and install it into the root offline, under qemu, with the image's
   own install.sh (pip --no-index);
4. run check_model.py for each target on this x86 host and under qemu-aarch64, and `edgellm devices`
   under qemu;
5. compare (compare.py): teacher-forced next-token agreement >= 99 % and 16 identical greedy tokens.
Everything heavy is cached under ~/.cache/edgellm/arm64 ($EDGELLM_ARM64_CACHE), so a rerun only runs models.
Writes summary.json and summary.md there; exits 1 when a threshold is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))       # tests.fixtures (the cached SmolLM2 artifacts)
sys.path.insert(0, str(HERE))

from compare import compare, markdown  # noqa: E402

TARGETS = {"raspberry-pi-5": ("Q4_0", "gguf"), "android-midrange": ("int4", "onnx")}
# The kernel probe starts child interpreters; qemu-user without binfmt_misc cannot exec an aarch64 binary from
# inside the emulated process, so the target run skips it (llama.cpp's defaults; no known Arm defect applies).
# QEMU_CPU: a Cortex-A76 (Raspberry Pi 5's core; armv8.2-a + dotprod), matching the root's /proc/cpuinfo.
TARGET_ENV = {"EDGELLM_KERNEL_PROBE": "0", "QEMU_CPU": "cortex-a76"}


def cache_dir() -> Path:
    return Path(os.environ.get("EDGELLM_ARM64_CACHE", Path.home() / ".cache/edgellm/arm64"))


def sh(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-3000:])
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}); log: {log}")
    return time.perf_counter() - t0


def make_bundle(out: Path, given: dict[str, str | None]) -> Path:
    """A bundle (bundle.json + variants/) of the cached test artifacts, one variant per target."""
    from edgellm.bundling import BUNDLE_NAME, BUNDLE_SCHEMA
    from edgellm.converters.manifest import sha256_file
    from edgellm.default_model import default_artifact

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    variants, targets = {}, {}
    for target, (quant, fmt) in TARGETS.items():
        src = Path(given.get(fmt) or default_artifact(quant, format=fmt))
        name = f"{fmt}-{quant.lower()}"
        shutil.copytree(src, tmp / "variants" / name)
        folder = tmp / "variants" / name
        files = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
        variants[name] = {"format": fmt, "quant": quant, "folder": f"variants/{name}", "files": files,
                          "size_bytes": sum((folder / f).stat().st_size for f in files), "source": str(src)}
        targets[target] = name
    (tmp / BUNDLE_NAME).write_text(json.dumps({"schema": BUNDLE_SCHEMA, "source": "smollm2 test artifacts",
                                               "variants": variants, "targets": targets}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="emulated ARM64 target run")
    ap.add_argument("--tokens", type=int, default=128, help="teacher-forced positions per variant")
    ap.add_argument("--min-agreement", type=float, default=0.99)
    ap.add_argument("--gate", choices=("strict", "near-tie"), default="strict",
                    help="strict: teacher-forced agreement >= --min-agreement and 16 identical greedy tokens; "
                         "near-tie: the target's choice is among the host's two most likely tokens at >= 99%% of "
                         "positions (two CPU kernel paths of one llama.cpp build disagree ~4%% on Q4_0 here)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for both runs (1: the shared build machine's cores are not oversubscribed)")
    ap.add_argument("--gguf", help="GGUF Q4_0 artifact folder (default: the cached test artifact)")
    ap.add_argument("--onnx", help="ONNX int4 artifact folder (default: the cached test artifact)")
    args = ap.parse_args(argv)
    cache = cache_dir()
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    root = cache / "root"
    times: dict[str, float] = {}
    env = {"EDGELLM_ARM64_CACHE": str(cache), "PYTHON": sys.executable}
    times["root_build_s"] = sh(["bash", str(HERE / "build_root.sh")], logs / "root.log", env)
    times["cross_build_s"] = sh(["bash", str(HERE / "cross_build_llama.sh")], logs / "cross.log", env)
    version = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; "
                              "print(m.version('llama-cpp-python'))"], capture_output=True, text=True).stdout.strip()
    llama_lib = cache / f"llama-{version}" / "lib"

    from edgellm.edge_image import edge_image

    t0 = time.perf_counter()
    bundle = make_bundle(cache / "work" / "smollm2.bundle", {"gguf": args.gguf, "onnx": args.onnx})
    image = edge_image(bundle, cache / "work" / "image", platform="linux-aarch64", python="3.11",
                       llama_lib=llama_lib, wheel_cache=cache / "wheels", overwrite=True)
    times["image_s"] = time.perf_counter() - t0

    site = root / "opt" / "edgellm"          # a host path: qemu's -L prefix then never redirects it
    shutil.rmtree(site, ignore_errors=True)
    tmpdir = cache / "tmp"
    tmpdir.mkdir(exist_ok=True)
    qpy = f"qemu-aarch64-static -L {root} {root}/usr/bin/python3.11"
    times["install_s"] = sh(["sh", str(image.path / "install.sh"), str(site)], logs / "install.log",
                            {"PYTHON": qpy, "EDGELLM_INSTALL_MODE": "target", "TMPDIR": str(tmpdir), "QEMU_CPU": "cortex-a76",
                             "PIP_NO_COMPILE": "1"})   # byte-compiling under emulation costs minutes

    target_env = {**TARGET_ENV, "PYTHONPATH": str(site), "TMPDIR": str(tmpdir),
                  "EDGELLM_CACHE_DIR": str(cache / "target-cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    results = []
    model = str(image.path / "model")
    for target in TARGETS:
        host_out, arm_out = cache / "work" / f"{target}.x86_64.json", cache / "work" / f"{target}.aarch64.json"
        common = [str(HERE / "check_model.py"), model, "--device", f"profile:{target}", "--tokens", str(args.tokens),
                  "--threads", str(args.threads)]
        times[f"{target}_host_s"] = sh([sys.executable, *common, "--baseline", "--out", str(host_out)],
                                       logs / f"{target}.host.log")
        times[f"{target}_emulated_s"] = sh([*qpy.split(), *common, "--out", str(arm_out)],
                                           logs / f"{target}.emulated.log", target_env)
        results.append(compare(json.loads(host_out.read_text()), json.loads(arm_out.read_text()), target))
    dev_log = logs / "devices.json"
    times["devices_s"] = sh([*qpy.split(), "-m", "edgellm.cli", "devices", "--json"], dev_log, target_env)
    devices = json.loads(dev_log.read_text()[dev_log.read_text().index("{"):])
    summary = {"results": results, "times_s": {k: round(v, 1) for k, v in times.items()},
               "image": {"runtimes": image.runtimes, "wheels": len(image.wheels),
                         "variants": {k: v["requirements"] for k, v in image.variants.items()}},
               "target_devices": {"cpu": devices.get("cpu", {})},
               "qemu": subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True,
                                      text=True).stdout.splitlines()[0]}
    (cache / "summary.json").write_text(json.dumps(summary, indent=1))
    (cache / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    if args.gate == "strict":
        ok = all(r["agreement"] >= args.min_agreement and r["greedy_identical"] for r in results)
    else:
        ok = all((r["target_in_host_top2"] or 0) >= 0.99 for r in results)
    if not ok:
        print(f"gate {args.gate}: a variant missed it (see the table)", file=sys.stderr)
    arch = str(devices.get("cpu", {}).get("arch", devices.get("cpu", {}).get("machine", "")))
    if arch != "aarch64":
        print(f"edgellm devices under emulation reported arch {arch!r}, not aarch64", file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
