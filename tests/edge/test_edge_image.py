"""Edge images: manifest, checksums, install script, runtime requirements computed from a real tiny ONNX int4
artifact, and the refusal of a target runtime too old for it. The image is written for linux-x86_64 with this
host's own llama.cpp libraries (real files), without network: the dependency wheels are not fetched here (the
emulated ARM64 run in test_emulated_arm64.py fetches and installs them for real)."""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import pytest

from edgellm import convert
from edgellm.edge_image import IMAGE_NAME, PIN_REASONS, edge_image, install_script
from edgellm.edge_requirements import (ArtifactRequirements, check_runtime, onnx_requirement, parse_version,
                                       require_runtime, requirements_for)
from edgellm.edge_wheels import get_platform, llama_python_sources, verify_wheelhouse
from edgellm.errors import BackendUnavailableError, BundleError

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny_int4(tiny_models: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("edge") / "tiny-int4"
    convert(tiny_models(), out, format="onnx", quant="int4", progress=False)
    return out


@pytest.fixture(scope="module")
def host_llama_lib() -> Path:
    _, pkg = llama_python_sources()
    return pkg / "lib"


@pytest.fixture(scope="module")
def image(tiny_int4: Path, host_llama_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("image")
    (base / "wheels").mkdir()
    r = edge_image(tiny_int4, base / "img", platform="linux-x86_64", python="3.11", llama_lib=host_llama_lib,
                   wheel_cache=base / "wheels", fetch=False, verify=False)
    return r.path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_requirements_computed_from_the_graph(tiny_int4: Path) -> None:
    reqs = requirements_for(tiny_int4)
    (ort,) = reqs.requirements
    assert ort.runtime == "onnxruntime" and ort.min_version == "1.23"
    # the reason at the top is the fact that sets the minimum: the embedding's GatherBlockQuantized `bits`
    assert ort.reasons[0].startswith("com.microsoft GatherBlockQuantized with attribute bits needs onnxruntime >= 1.23")
    assert any("MatMulNBits" in r for r in ort.reasons) and any("opset" in r for r in ort.reasons)
    assert not any("double" in r for r in ort.reasons)      # rope tables are float32 only (converters/onnx_ops.py)
    assert check_runtime(reqs, {"onnxruntime": "1.23.2"}) == []
    assert check_runtime(reqs, {"onnxruntime": "1.30.0.dev20260101"}) == []
    (too_old,) = check_runtime(reqs, {"onnxruntime": "1.22.0"})
    assert "1.22.0 < 1.23" in too_old and "GatherBlockQuantized with attribute bits" in too_old
    assert "not installed" in check_runtime(reqs, {})[0]
    with pytest.raises(BackendUnavailableError, match="GatherBlockQuantized"):
        require_runtime(reqs, {"onnxruntime": "1.20.1"})
    assert ArtifactRequirements.from_dict(reqs.to_dict()) == reqs


def test_kernel_rules_follow_element_types(tmp_path: Path) -> None:
    """A graph that takes Cos of doubles needs the onnxruntime with that kernel (1.29); the same graph on floats
    does not: the rule reads the element type from shape inference, not the op name alone."""
    import onnx
    from onnx import TensorProto, helper

    for elem, expect in ((TensorProto.DOUBLE, "1.29"), (TensorProto.FLOAT, None)):
        graph = helper.make_graph([helper.make_node("Cos", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", elem, [4])],
                                  [helper.make_tensor_value_info("y", elem, [4])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        path = tmp_path / f"cos{elem}.onnx"
        onnx.save(model, str(path))
        req = onnx_requirement(path)
        assert any(r.startswith("Cos on double needs onnxruntime >= 1.29") for r in req.reasons) == bool(expect)
        if expect:
            assert req.min_version == expect


def test_parse_version() -> None:
    assert parse_version("1.23.2") == (1, 23, 2) and parse_version("0.3.36+cpu") == (0, 3, 36)
    assert parse_version("1.9") < parse_version("1.10")
    with pytest.raises(ValueError):
        parse_version("latest")


def test_gguf_requirements_name_the_arm_repack(tiny_models: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "q4"
    convert(tiny_models(), out, format="gguf", quant="Q4_0", progress=False)
    (req,) = requirements_for(out).requirements
    assert req.runtime == "llama-cpp-python" and parse_version(req.min_version) >= (0, 2, 0)
    assert any(f.startswith("arm-repack-q4_0") for f in req.features)


def test_image_manifest_checksums_and_requirements(image: Path) -> None:
    doc = json.loads((image / IMAGE_NAME).read_text())
    assert doc["platform"] == "linux-x86_64" and doc["python"] == "3.11" and doc["machine"] == "x86_64"
    (name, variant), = doc["variants"].items()
    assert name == "onnx-int4" and variant["format"] == "onnx"
    assert (image / variant["folder"] / "model.onnx").is_file()
    (ort,) = variant["requirements"]["runtimes"]
    assert ort["min_version"] == "1.23"
    host_ort = importlib.metadata.version("onnxruntime")
    assert doc["runtimes"]["onnxruntime"] == host_ort
    assert doc["pins"]["onnxruntime"] == {"version": host_ort, "reason": PIN_REASONS["host"]}
    names = {w["name"] for w in doc["wheels"].values()}
    assert {"edgellm", "llama-cpp-python"} <= names
    for file, w in doc["wheels"].items():
        assert _sha(image / "wheelhouse" / file) == w["sha256"]
    sums = dict(reversed(line.split("  ", 1)) for line in (image / "SHA256SUMS").read_text().splitlines())
    assert {"install.sh", "requirements.txt", IMAGE_NAME, "model/edgellm.json", "model/model.onnx"} <= set(sums)
    for rel, digest in sums.items():
        assert _sha(image / rel) == digest, rel
    pins = (image / "requirements.txt").read_text().split()
    version, _ = llama_python_sources()
    assert "edgellm==0.1.0" in pins and f"llama-cpp-python=={version}" in pins and f"onnxruntime=={host_ort}" in pins
    assert not list(image.parent.glob("*.partial"))


def test_assembled_llama_wheel_is_valid(image: Path) -> None:
    (whl,) = (image / "wheelhouse").glob("llama_cpp_python-*.whl")
    assert whl.name.endswith("-py3-none-linux_x86_64.whl")
    with zipfile.ZipFile(whl) as zf:
        names = set(zf.namelist())
        assert {"llama_cpp/__init__.py", "llama_cpp/llama_cpp.py", "llama_cpp/lib/libllama.so"} <= names
        assert not any("__pycache__" in n for n in names)
        info = next(n for n in names if n.endswith(".dist-info/RECORD"))
        for line in zf.read(info).decode().splitlines():
            path, digest, size = line.split(",")
            if path == info:
                continue
            data = zf.read(path)
            want = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == want and int(size) == len(data), path


def test_own_wheel_holds_every_module_and_data_file(image: Path) -> None:
    """edgellm's wheel (what `pip install edgellm` and edge images get) holds every module of the source tree at
    its mapped path, and the data files: a subpackage missing from pyproject's list is only seen off the editable
    install (converters/families was, until the emulated ARM64 run imported it from the wheel)."""
    root = Path(__file__).resolve().parents[2]
    rooms = {"sdk": "edgellm", "converters": "edgellm/converters", "runtimes": "edgellm/runtimes",
             "devices": "edgellm/devices"}
    expected = {f"{pkg}/{f.relative_to(root / room).as_posix()}" for room, pkg in rooms.items()
                for f in (root / room).rglob("*") if f.is_file() and "__pycache__" not in f.parts
                and f.suffix in (".py", ".json", ".txt", ".typed")}
    (whl,) = (image / "wheelhouse").glob("edgellm-*.whl")
    with zipfile.ZipFile(whl) as zf:
        names = set(zf.namelist())
    assert "edgellm/converters/families/llama.py" in expected
    assert sorted(expected - names) == []


def test_install_script_is_offline_and_checks_the_platform(image: Path, tmp_path: Path) -> None:
    text = (image / "install.sh").read_text()
    assert "--no-index" in text and "--find-links" in text and "sha256sum -c" in text
    assert "pip download" not in text and "http" not in text
    assert os.access(image / "install.sh", os.X_OK)
    assert subprocess.run(["sh", "-n", str(image / "install.sh")]).returncode == 0
    # the platform guard refuses a host the image is not for (this x86 host, an aarch64 image's script)
    script = tmp_path / "install.sh"
    script.write_text(install_script(get_platform("linux-aarch64"), "3.11"))
    proc = subprocess.run(["sh", str(script), str(tmp_path / "venv")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode != 0 and "this image is for aarch64 / Python 3.11" in proc.stderr
    assert not (tmp_path / "venv").exists()


def test_too_old_target_runtime_is_refused(tiny_int4: Path, host_llama_lib: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError) as err:
        edge_image(tiny_int4, tmp_path / "img", platform="linux-x86_64", llama_lib=host_llama_lib,
                   onnxruntime="1.22.0", fetch=False, verify=False)
    assert "onnx-int4" in err.value.message and "1.22.0 < 1.23" in err.value.message
    assert "GatherBlockQuantized" in err.value.message and err.value.hint
    assert not (tmp_path / "img").exists() and not (tmp_path / "img.partial").exists()


def test_image_needs_a_target_llama_cpp(tiny_int4: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cross_build_llama.sh"):
        edge_image(tiny_int4, tmp_path / "img", platform="linux-aarch64", fetch=False, verify=False)
    with pytest.raises(BundleError, match="unknown platform"):
        edge_image(tiny_int4, tmp_path / "img", platform="linux-riscv64", fetch=False, verify=False)


def test_offline_resolve_catches_a_missing_wheel(image: Path) -> None:
    """The wheelhouse written without fetching lacks numpy & co.: the build-host check says so."""
    pins = (image / "requirements.txt").read_text().split()
    with pytest.raises(BundleError, match="resolving the wheelhouse offline"):
        verify_wheelhouse(image / "wheelhouse", pins, get_platform("linux-x86_64"), "3.11")
