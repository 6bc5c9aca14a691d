"""CLI rough edges: --version, -v after the subcommand, a closed stdout pipe, error classes on the package."""
from __future__ import annotations

import subprocess
import sys

import pytest

import edgellm
from edgellm.cli import build_parser, main


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"edgellm {edgellm.__version__}"


def test_verbose_flag_is_accepted_after_every_subcommand() -> None:
    parser = build_parser()
    assert parser.parse_args(["-v", "devices"]).verbose is True
    assert parser.parse_args(["devices", "-v"]).verbose is True
    assert parser.parse_args(["devices"]).verbose is False
    sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    for name, command in sub.choices.items():
        assert any("--verbose" in a.option_strings for a in command._actions), name


def test_closed_stdout_pipe_exits_quietly() -> None:
    code = ("import os, sys\nr, w = os.pipe()\nos.close(r)\nos.dup2(w, 1)\n"
            "from edgellm.cli import main\nsys.exit(main(['devices', '--profiles', '--json']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 141
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_every_error_class_is_reachable_from_the_package() -> None:
    from edgellm import errors

    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, errors.EdgeLLMError):
            assert getattr(edgellm, name) is obj
    with pytest.raises(AttributeError):
        edgellm.NotAnErrorAtAll  # noqa: B018
