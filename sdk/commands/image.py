"""`edgellm image SOURCE -o OUT --platform linux-aarch64 --python 3.11 --llama-lib DIR`: an offline edge image."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def run_image(source: str, output: str, platform: str = "linux-aarch64", python: str = "3.11",
              onnxruntime: str | None = None, llama_lib: str | None = None, wheel_cache: str | None = None,
              fetch: bool = True, verify: bool = True, overwrite: bool = False,
              json_output: bool = False) -> int:
    from ..edge_image import edge_image

    r = edge_image(source, output, platform=platform, python=python, onnxruntime=onnxruntime, llama_lib=llama_lib,
                   wheel_cache=wheel_cache, fetch=fetch, verify=verify, overwrite=overwrite)
    if json_output:
        print(json.dumps({"path": str(r.path), "platform": r.platform, "python": r.python, "runtimes": r.runtimes,
                          "variants": r.variants, "wheels": r.wheels}, indent=2))
        return 0
    print(f"wrote {r.path} ({r.platform}, Python {r.python}; {len(r.wheels)} wheels)")
    for name, v in r.variants.items():
        need = ", ".join(f"{q['runtime']}>={q['min_version']}" for q in v["requirements"]["runtimes"])
        print(f"  {name:<14} {v['format']:<5} needs {need}")
    print("  target runtimes: " + ", ".join(f"{k} {v}" for k, v in r.runtimes.items()))
    print(f"install on the target (offline): sh {r.path}/install.sh")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..edge_wheels import PLATFORMS

    p = sub.add_parser("image", help="build an offline edge image (model + wheelhouse + install script)")
    p.add_argument("source", help="bundle folder (edgellm bundle) or artifact folder (edgellm convert)")
    p.add_argument("-o", "--output", required=True, help="image folder to create")
    p.add_argument("--platform", default="linux-aarch64", choices=sorted(PLATFORMS))
    p.add_argument("--python", default="3.11", help="the target's Python version (e.g. 3.11)")
    p.add_argument("--onnxruntime", default=None,
                   help="onnxruntime version for the target (default: this host's, which the artifacts were tested with)")
    p.add_argument("--llama-lib", default=None,
                   help="folder of llama.cpp built for the target (samples/edge_target/cross_build_llama.sh)")
    p.add_argument("--wheel-cache", default=None, help="folder where dependency wheels are downloaded and reused")
    p.add_argument("--no-fetch", dest="fetch", action="store_false",
                   help="download nothing: the wheel cache must hold them")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the offline resolve check")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    p.add_argument("--json", dest="json_output", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_image)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edgellm.commands.image ...` until the subcommand is registered in edgellm.cli."""
    parser = argparse.ArgumentParser(prog="edgellm")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["image", *(argv if argv is not None else sys.argv[1:])])
    kwargs = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    from ..errors import EdgeLLMError

    try:
        return args.func(**kwargs)
    except EdgeLLMError as exc:
        sys.stderr.write(f"edgellm: error: {exc}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
