"""Run mypy over the installed package layout without installing it.

The design card keeps the top-level rooms (sdk/, converters/, runtimes/, devices/) and setuptools installs them as
`edgellm`, `edgellm.converters`, ... (see pyproject's package-dir). mypy follows imports by folder, so this script
mirrors that mapping with symlinks in a temporary folder and checks `-p edgellm` there, with pyproject's [tool.mypy]
settings. Exit status is mypy's. Run by `make test` (and `make lint`).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("converters", "runtimes", "devices")   # sdk/commands is already inside sdk/


def mirror(dest: Path) -> Path:
    """dest/edgellm -> the package as setuptools installs it (real files, linked)."""
    pkg = dest / "edgellm"
    pkg.mkdir()
    for entry in (ROOT / "sdk").iterdir():
        if entry.name != "__pycache__":
            os.symlink(entry, pkg / entry.name)
    for name in SUBPACKAGES:
        os.symlink(ROOT / name, pkg / name)
    return pkg


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="edgellm-mypy-") as tmp:
        mirror(Path(tmp))
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "--cache-dir", str(ROOT / ".mypy_cache"), "-p", "edgellm", *argv]
        return subprocess.run(cmd, cwd=tmp, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
