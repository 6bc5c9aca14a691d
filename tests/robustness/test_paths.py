"""Path escapes: manifests, bundles, ONNX artifacts and HF indexes that name files outside their folder (by
'..', absolute paths or symlinks). Every variant is refused with a typed error; the files outside are valid, so
a variant that followed one would load (counted as an escape); nothing outside is written."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest

import edgellm
from edgellm.bundling import read_bundle, verify_variant
from edgellm.converters.hf import read_hf_model
from edgellm.errors import BundleError
from tests.robustness.tally import assert_clean, classify, row


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(seed_gguf: Path, seed_onnx: Path, seed_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paths")
    outside = root / "outside"
    shutil.copytree(seed_gguf.parent, outside / "gguf")
    shutil.copytree(seed_onnx, outside / "onnx")
    shutil.copytree(seed_hf, outside / "hf")
    return {"root": root, "outside": outside, "gguf": seed_gguf, "onnx": seed_onnx, "hf": seed_hf}


def _gguf_dir(w: dict[str, Path], name: str) -> Path:
    folder = w["root"] / name
    shutil.copytree(w["gguf"].parent, folder)
    return folder


def _onnx_dir(w: dict[str, Path], name: str) -> Path:
    folder = w["root"] / name
    shutil.copytree(w["onnx"], folder)
    return folder


def _edit_manifest(folder: Path, **change: object) -> Path:
    m = json.loads((folder / "edgellm.json").read_text())
    m.update(change)
    (folder / "edgellm.json").write_text(json.dumps(m))
    return folder


def _relink(folder: Path, name: str, target: Path) -> Path:
    (folder / name).unlink()
    (folder / name).symlink_to(target)
    return folder


def _bundle(w: dict[str, Path], name: str, variant_folder: str = "variants/v",
            files: Callable[[Path], dict[str, str]] | None = None) -> Path:
    root = w["root"] / name
    art = root / "variants" / "v"
    shutil.copytree(w["gguf"].parent, art)
    listed = {str(p.relative_to(art)): hashlib.sha256(p.read_bytes()).hexdigest() for p in art.rglob("*") if p.is_file()}
    doc = {"schema": 1, "variants": {"v": {"format": "gguf", "quant": "Q8_0", "folder": variant_folder,
                                           "files": files(art) if files else listed, "size_bytes": 1}},
           "targets": {"raspberry-pi-5": "v"}}
    (root / "bundle.json").write_text(json.dumps(doc))
    return root


def _variants(w: dict[str, Path]) -> dict[str, Callable[[], object]]:
    out = w["outside"]
    gguf_out = next((out / "gguf").glob("*.gguf"))

    def load(path: Path) -> Callable[[], object]:
        return lambda: edgellm.load(path, device="cpu", n_ctx=64, threads=1).close()

    def hf_index(name: str, shard: str) -> Callable[[], object]:
        folder = w["root"] / name
        shutil.copytree(w["hf"], folder)
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": shard}}))
        return lambda: read_hf_model(folder).close()

    gname = w["gguf"].name
    return {
        "manifest_file_dotdot": load(_edit_manifest(_gguf_dir(w, "m1"), file=f"../outside/gguf/{gname}")),
        "manifest_file_absolute": load(_edit_manifest(_gguf_dir(w, "m2"), file=str(gguf_out))),
        "manifest_file_nested_dotdot": load(_edit_manifest(_gguf_dir(w, "m3"), file=f"a/../../outside/gguf/{gname}")),
        "manifest_files_dotdot": load(_edit_manifest(_gguf_dir(w, "m4"), files=["../outside/gguf/x"])),
        "manifest_file_symlink_out": load(_relink(_gguf_dir(w, "m5"), gname, gguf_out)),
        "manifest_file_empty": load(_edit_manifest(_gguf_dir(w, "m6"), file="")),
        "manifest_file_nul": load(_edit_manifest(_gguf_dir(w, "m7"), file="a\0b")),
        "manifest_file_list_type": load(_edit_manifest(_gguf_dir(w, "m8"), file=["x"])),
        "onnx_tokenizer_symlink_out": load(_relink(_onnx_dir(w, "o1"), "tokenizer.json",
                                                    out / "onnx" / "tokenizer.json") / "model.onnx"),
        "onnx_tokenizer_config_symlink_out": load(_relink(_onnx_dir(w, "o2"), "tokenizer_config.json",
                                                           out / "onnx" / "tokenizer_config.json") / "model.onnx"),
        "onnx_genai_config_symlink_out": load(_relink(_onnx_dir(w, "o3"), "genai_config.json",
                                                       out / "onnx" / "genai_config.json") / "model.onnx"),
        "onnx_external_data_symlink_out": load(_relink(_onnx_dir(w, "o4"), "model.onnx.data",
                                                        out / "onnx" / "model.onnx.data") / "model.onnx"),
        "onnx_folder_tokenizer_symlink_out": load(_relink(_onnx_dir(w, "o5"), "tokenizer.json",
                                                           out / "onnx" / "tokenizer.json")),
        "bundle_folder_dotdot": load(_bundle(w, "b1", "../outside/gguf")),
        "bundle_folder_absolute": load(_bundle(w, "b2", str(out / "gguf"))),
        "bundle_file_dotdot": load(_bundle(w, "b3", files=lambda a: {"../../../outside/gguf/" + gname: "0" * 64})),
        "bundle_files_empty": load(_bundle(w, "b4", files=lambda a: {})),
        "bundle_file_symlink_out": load(_relink(_bundle(w, "b5") / "variants" / "v", gname, gguf_out).parents[1]),
        "bundle_unlisted_file": load(_bundle(w, "b6", files=lambda a: {
            k: v for k, v in ((str(p.relative_to(a)), hashlib.sha256(p.read_bytes()).hexdigest())
                              for p in a.rglob("*") if p.is_file()) if k != "edgellm.json"})),
        "hf_index_shard_dotdot": hf_index("h1", "../outside/hf/model.safetensors"),
        "hf_index_shard_absolute": hf_index("h2", str(out / "hf" / "model.safetensors")),
        "convert_out_dotdot_into_source": lambda: edgellm.convert(w["hf"], w["hf"] / "x" / ".." / "y"),
    }


def test_path_escapes_are_refused(world: dict[str, Path]) -> None:
    before = _digest(world["outside"])
    variants = _variants(world)
    for name, fn in variants.items():
        if classify("path variants", name, fn) == "accepted":
            row("path variants").escapes += 1
            row("path variants").note(f"{name}: followed a path outside its folder")
    if _digest(world["outside"]) != before:
        row("path variants").escapes += 1
    assert_clean("path variants")
    assert len(variants) >= 20


def test_bundle_checksums_every_file(world: dict[str, Path]) -> None:
    good = _bundle(world, "bg")
    assert verify_variant(good, "v").is_dir()
    gguf = next((good / "variants" / "v").glob("*.gguf"))
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 1
    gguf.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        verify_variant(good, "v")
    doc = json.loads((good / "bundle.json").read_text())
    del doc["variants"]["v"]["files"]
    (good / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="lists no files"):
        read_bundle(good)


def test_controls_load(world: dict[str, Path]) -> None:
    """The same constructions without the escape load, so the refusals above are about the paths."""
    for path in (_gguf_dir(world, "c1"), _onnx_dir(world, "c2") / "model.onnx", _bundle(world, "c3")):
        edgellm.load(path, device="cpu", n_ctx=64, threads=1).close()
