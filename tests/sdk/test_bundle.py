"""Bundles: variants per target, checksummed, picked by device at load; damage is refused, not run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgellm
from edgellm.bundling import read_bundle
from edgellm.cli import main
from edgellm.errors import BundleError, ProfileError, UnsafePathError

TARGETS = ["raspberry-pi-5", "android-midrange", "laptop-8gb-cpu", "raspberry-pi-4-4gb"]


@pytest.fixture(scope="module")
def built(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("bundle") / "tiny.bundle"
    result = edgellm.bundle(tiny_models(), out, TARGETS)
    assert result.path == out and not out.with_name(out.name + ".partial").exists()
    return out


def test_one_variant_per_distinct_preference_with_checksums(built: Path) -> None:
    doc = read_bundle(built)
    assert set(doc["variants"]) == {"gguf-q4_0", "onnx-int4", "gguf-q4_k_m"}  # the two Pis share Q4_0
    assert doc["targets"]["raspberry-pi-4-4gb"] == doc["targets"]["raspberry-pi-5"] == "gguf-q4_0"
    for v in doc["variants"].values():
        assert v["files"] and all(len(h) == 64 for h in v["files"].values())
        assert any(f.endswith((".gguf", ".onnx")) for f in v["files"])


@pytest.mark.parametrize("profile,fmt", [("raspberry-pi-5", "gguf"), ("android-midrange", "onnx")])
def test_load_picks_the_targets_variant(built: Path, profile: str, fmt: str) -> None:
    with edgellm.load(built, device=f"profile:{profile}", n_ctx=128) as model:
        assert model.runtime.capabilities.formats == (fmt,)
        assert model.generate("hello", max_tokens=3, temperature=0.0).metrics.generated_tokens >= 1


def test_auto_device_gets_the_largest_variant_that_fits(built: Path) -> None:
    doc = read_bundle(built)
    largest = max(doc["variants"].values(), key=lambda v: v["size_bytes"])
    with edgellm.load(built, n_ctx=128) as model:
        assert Path(model.artifact).parent.name == Path(largest["folder"]).name


def test_a_modified_file_is_refused(built: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy.bundle"
    shutil.copytree(built, copy)
    gguf = next((copy / "variants" / "gguf-q4_0").glob("*.gguf"))
    data = bytearray(gguf.read_bytes())
    data[-10] ^= 0xFF
    gguf.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        edgellm.load(copy, device="profile:raspberry-pi-5")
    gguf.unlink()
    with pytest.raises(BundleError, match="missing"):
        edgellm.load(copy, device="profile:raspberry-pi-5")


def test_paths_escaping_the_bundle_are_refused(built: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "evil.bundle"
    shutil.copytree(built, copy)
    doc = json.loads((copy / "bundle.json").read_text())
    doc["variants"]["gguf-q4_0"]["folder"] = "../../etc"
    (copy / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(UnsafePathError):
        read_bundle(copy)


def test_unknown_target_fails_before_any_work(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(ProfileError, match="raspberry-pi-5"):
        edgellm.bundle(tiny_models(), tmp_path / "b", ["toaster-9000"])
    assert not list(tmp_path.iterdir())


def test_cli_bundle(tiny_models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    out = tmp_path / "cli.bundle"
    assert main(["bundle", str(tiny_models()), str(out), "--targets", "raspberry-pi-5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["targets"] == {"raspberry-pi-5": "gguf-q4_0"} and (out / "bundle.json").is_file()
    assert main(["bundle", str(tiny_models()), str(out), "--targets", "raspberry-pi-5"]) == 1
    assert "already exists" in capsys.readouterr().err
