import json

import pytest

from edgellm.cli import main


def test_devices_json(capsys):
    assert main(["devices", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cpu"]["logical_cores"] >= 1 and data["bandwidth"]["read_gbs"] > 0
    assert isinstance(data["cuda"]["gpus"], list) and (data["cuda"]["gpus"] or data["cuda"]["reason"])


def test_devices_profiles_table(capsys):
    assert main(["devices", "--profiles"]) == 0
    out = capsys.readouterr().out
    assert "| raspberry-pi-5 |" in out and "Q4_0" in out


@pytest.mark.slow
def test_plan_json_and_refusal(smollm2_gguf, capsys):
    path = smollm2_gguf("Q4_K_M")
    assert main(["plan", str(path), "--device", "profile:raspberry-pi-5", "--n-ctx", "2048", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["quant"] == "Q4_K_M" and data["threads"] == 4 and data["n_ctx"] == 2048 and data["reasons"]
    assert main(["plan", str(path), "--device", "profile:raspberry-pi-5", "--max-memory", "100MiB"]) == 1
    assert "is available" in capsys.readouterr().err
    assert main(["plan", str(path), "--max-memory", "two gigs"]) == 1
