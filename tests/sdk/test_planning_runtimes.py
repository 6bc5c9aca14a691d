"""A target whose runtimes are pinned (profiles.json `runtimes`) is never planned a variant they cannot run: plan
skips it with the reason (from the artifact's own requirements, or the recipe's before converting), refuses when
nothing is left, and a bundle's variant choice does the same."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import edgellm
from edgellm.bundling import pick_variant, read_bundle
from edgellm.devices.profiles import load_profiles
from edgellm.devices.types import Device
from edgellm.errors import BackendUnavailableError, ProfileError
from edgellm.planning import plan, resolve_device

OLD_ORT = (("llama-cpp-python", "0.3.36"), ("onnxruntime", "1.22.0"))   # before GatherBlockQuantized's `bits`


def phone(runtimes: tuple[tuple[str, str], ...]) -> Device:
    dev = resolve_device("profile:android-midrange", target=True)
    assert dev.profile is not None and dev.profile.runtimes == ()   # the shipped profile pins nothing
    return replace(dev, profile=replace(dev.profile, runtimes=runtimes))


def test_profiles_json_runtimes_field_is_parsed_and_checked(tmp_path: Path) -> None:
    doc = json.loads((Path(edgellm.devices.profiles.__file__).with_name("profiles.json")).read_text())
    doc["profiles"]["android-midrange"]["runtimes"] = {"onnxruntime": "1.22.0"}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    assert load_profiles(path)["android-midrange"].runtime_versions == {"onnxruntime": "1.22.0"}
    for bad in ({"onnxruntime": "latest"}, {"tensorflow-lite": "2.16"}, ["onnxruntime"]):
        doc["profiles"]["android-midrange"]["runtimes"] = bad
        path.write_text(json.dumps(doc))
        with pytest.raises(ProfileError, match="runtimes"):
            load_profiles(path)


def test_plan_skips_a_variant_the_pinned_runtime_cannot_run_and_says_why(tiny_models) -> None:  # noqa: ANN001
    folder = tiny_models()
    free = plan(folder, device=phone(()))
    assert (free.format, free.quant) == ("onnx", "int4")        # the profile's default when nothing is pinned
    old = plan(folder, device=phone(OLD_ORT))
    assert (old.format, old.quant) == ("gguf", "Q4_0")          # its second choice
    refused = [r for r in old.reasons if r.startswith("refused onnx int4:")]
    assert refused and "onnxruntime 1.22.0 < 1.23" in refused[0] and "bits" in refused[0]
    assert any(r.startswith("target runtimes (android-midrange): llama-cpp-python 0.3.36, onnxruntime 1.22.0")
               for r in old.reasons)
    new = plan(folder, device=phone((("onnxruntime", "1.23.2"),)))
    assert (new.format, new.quant) == ("onnx", "int4")
    with pytest.raises(BackendUnavailableError) as err:        # no llama.cpp, an onnxruntime too old: nothing left
        plan(folder, device=phone((("onnxruntime", "1.22.0"),)))
    assert "onnx int4: onnxruntime 1.22.0 < 1.23" in err.value.message
    assert "gguf Q4_0: llama-cpp-python is not installed on the target" in err.value.message


def test_a_converted_artifact_is_checked_from_its_own_graph(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    from edgellm.converters.onnx import convert_to_onnx

    int4, rtn = tmp_path / "int4", tmp_path / "rtn"      # artifact folders (edgellm.json names the recipe)
    convert_to_onnx(tiny_models(), int4, quant="int4")
    convert_to_onnx(tiny_models(), rtn, quant="int4-rtn")   # an fp16 table: no GatherBlockQuantized `bits`
    with pytest.raises(BackendUnavailableError, match="GatherBlockQuantized with attribute bits"):
        plan(int4, device=phone(OLD_ORT))
    p = plan(rtn, device=phone(OLD_ORT))
    assert (p.format, p.quant) == ("onnx", "int4-rtn") and not p.needs_conversion


@pytest.mark.slow
def test_bundle_variant_choice_follows_the_pinned_runtimes(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    out = edgellm.bundle(tiny_models(), tmp_path / "b.bundle", ["android-midrange", "raspberry-pi-5"]).path
    doc = read_bundle(out)
    assert doc["targets"] == {"android-midrange": "onnx-int4", "raspberry-pi-5": "gguf-q4_0"}
    assert pick_variant(out, phone(()))[0] == "onnx-int4"
    name, why = pick_variant(out, phone(OLD_ORT))
    assert name == "gguf-q4_0" and "onnx-int4: the target's runtimes cannot run it" in why
    with pytest.raises(BackendUnavailableError, match="onnx-int4: the target's runtimes cannot run it"):
        pick_variant(out, phone((("onnxruntime", "1.22.0"),)))
