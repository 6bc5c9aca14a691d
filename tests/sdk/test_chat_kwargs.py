"""Template variables reach the chat template through the API and the CLI: Qwen3's thinking switch
(`enable_thinking`) rendered by Model.chat_prompt / `edgellm run --chat --no-think` equals plain jinja2's rendering
with the same variable, and differs from the default."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgellm
from edgellm.cli import main
from tests.runtimes.test_chat_templates import TEMPLATES, hf_render


@pytest.fixture(scope="module")
def qwen3_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgellm.converters.gguf import convert_to_gguf
    from tests.converters.test_families import ROWS
    from tests.fixtures.tiny import make_family_model

    root = tmp_path_factory.mktemp("kwargs")
    folder = make_family_model(root / "hf" / "model", ROWS["qwen3"])
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": TEMPLATES["qwen3"][0]}))
    return convert_to_gguf(folder, root / "gguf", "F32").path.parent


def test_enable_thinking_reaches_the_template(qwen3_chat: Path) -> None:
    messages = [{"role": "user", "content": "Hello there"}]
    with edgellm.load(qwen3_chat, n_ctx=512) as model:
        info = model.runtime.tokenizer_info

        def expected(**kwargs: object) -> list[int]:
            text = hf_render(TEMPLATES["qwen3"][0], messages, bos_token=info.bos_text, eos_token=info.eos_text,
                             **kwargs)
            return model.runtime.tokenize(text, add_special=False, parse_special=True)

        off = model.chat_prompt(messages, template_kwargs={"enable_thinking": False})
        assert off == expected(enable_thinking=False)
        assert model.chat_prompt(messages) == expected() != off
        result = model.chat(messages, template_kwargs={"enable_thinking": False}, max_tokens=2, temperature=0.0)
        assert result.metrics.prompt_tokens == len(off)


def test_cli_no_think_and_template_kwargs(qwen3_chat: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", str(qwen3_chat), "Hello there", "--chat", "-n", "1", "--temperature", "0", "--json"]
    counts = []
    for extra in ([], ["--no-think"], ["--chat-template-kwargs", '{"enable_thinking": false}']):
        assert main(args + extra) == 0
        counts.append(json.loads(capsys.readouterr().out)["metrics"]["prompt_tokens"])
    assert counts[1] == counts[2] != counts[0]
    with pytest.raises(SystemExit) as info:   # argparse refuses it with a usage message
        main(args + ["--chat-template-kwargs", "[1]"])
    assert info.value.code == 2 and "JSON object" in capsys.readouterr().err


def test_server_passes_chat_template_kwargs(qwen3_chat: Path) -> None:
    """`chat_template_kwargs` in a chat request (vLLM's field) reaches the template; on a completion it is a 400."""
    import httpx

    from tests.sdk.server_harness import RunningServer

    model = edgellm.load(qwen3_chat, n_ctx=512)
    server = RunningServer([model], model_id="tiny")
    try:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 1,
                "temperature": 0}
        plain = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
        off = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                         json={**body, "chat_template_kwargs": {"enable_thinking": False}}).json()
        want = len(model.chat_prompt(body["messages"], template_kwargs={"enable_thinking": False}))
        assert off["usage"]["prompt_tokens"] == want != plain["usage"]["prompt_tokens"]
        bad = httpx.post(server.url + "/v1/completions", timeout=60,
                         json={"model": "tiny", "prompt": "x", "chat_template_kwargs": {"a": 1}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "chat_template_kwargs"
    finally:
        server.stop()
        model.close()
