"""The samples' logic on the FakeRuntime test double (milliseconds): Ctrl-C in the CLI chat cancels the answer and
keeps the conversation, the desktop session's Stop, and the desktop chat's sampling defaults."""
from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest

from edgellm.model import Model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "samples"))


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="SIGINT goes to the main thread")
def test_cli_ctrl_c_cancels_the_answer_and_the_chat_goes_on(fake_model: Callable[..., Model]) -> None:
    from laptop_cli_chat import STOPPED, chat_loop

    model = fake_model([b"word "] * 400, step_s=0.005, n_ctx=4096)
    model.runtime.steps_done = 0
    # SIGINT once the answer streams: Python raises KeyboardInterrupt in this (the main) thread
    fire = threading.Thread(target=lambda: (model.runtime.in_prefill.wait(5), _after_steps(model, 20),
                                            os.kill(os.getpid(), signal.SIGINT)))
    fire.start()
    out = io.StringIO()
    turns = chat_loop(model, io.StringIO("tell me\nand again\n"), out, max_tokens=300)
    fire.join(5)
    text = out.getvalue()
    assert turns == 2 and text.count(STOPPED) == 1, text[-500:]
    first, second = text.split(STOPPED)
    assert 5 < first.count("word") < 300 and second.count("word") == 300   # the second answer ran to its end


def _after_steps(model: Model, n: int) -> None:
    from tests.fakes import wait_until

    wait_until(lambda: model.runtime.steps_done >= n)


def test_desktop_session_stop_keeps_the_partial_answer(fake_model: Callable[..., Model]) -> None:
    from desktop_chat import ChatSession

    model = fake_model([b"tok "] * 500, step_s=0.005, n_ctx=4096)
    session = ChatSession(model, max_tokens=500)
    pieces: list[str] = []
    done: list[str] = []
    worker = session.ask("hi", pieces.append, done.append)
    assert session.busy
    from tests.fakes import wait_until

    assert wait_until(lambda: len(pieces) >= 10)
    session.stop(wait=5)
    assert not worker.is_alive() and not session.busy and session.last_finish == "cancelled"
    assert session.history[-1]["role"] == "assistant" and 10 <= session.history[-1]["content"].count("tok") < 500
    assert len(done) == 1


def test_desktop_sampling_defaults_follow_the_artifacts_generation_config(tmp_path: Path) -> None:
    from desktop_chat import DEFAULT_SAMPLING, sampling_defaults

    assert sampling_defaults(tmp_path / "model.gguf") == DEFAULT_SAMPLING        # none: our defaults
    assert DEFAULT_SAMPLING["repeat_penalty"] > 1.0
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.6, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05, "do_sample": True}))
    got = sampling_defaults(tmp_path / "model.onnx")
    assert got == {"temperature": 0.6, "top_p": 0.8, "top_k": 20, "repeat_penalty": 1.05}
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": "hot"}))
    assert sampling_defaults(tmp_path)["temperature"] == 0.0
    (tmp_path / "generation_config.json").write_text("{not json")
    assert sampling_defaults(tmp_path) == DEFAULT_SAMPLING
