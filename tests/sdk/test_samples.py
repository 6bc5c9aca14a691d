"""The samples run on real models: the laptop CLI chat, the desktop chat session, the edge build."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import edgellm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "samples"))


@pytest.mark.slow
def test_laptop_cli_chat_answers_each_line(smollm2_artifact) -> None:  # noqa: ANN001
    from laptop_cli_chat import chat_loop

    out = io.StringIO()
    with edgellm.load(smollm2_artifact("F16"), n_ctx=512) as model:
        turns = chat_loop(model, io.StringIO("What is the capital of France?\n/stats\n/reset\nHi\n/quit\nignored\n"),
                          out, max_tokens=24, temperature=0.0)
    text = out.getvalue()
    assert turns == 2 and "Paris" in text and "tok/s" in text and "(history cleared)" in text


def test_laptop_cli_chat_as_a_process(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    art = tmp_path / "art"
    edgellm.convert(tiny_models(), art, quant="Q8_0")
    proc = subprocess.run([sys.executable, str(ROOT / "samples" / "laptop_cli_chat.py"), str(art)],
                          input="hello\n/stats\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.count("> ") == 1 and "tok/s" in proc.stdout


def test_desktop_chat_session_streams_on_a_worker_thread(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    from desktop_chat import ChatSession

    art = tmp_path / "art"
    edgellm.convert(tiny_models(), art, quant="Q8_0")
    pieces: list[str] = []
    done: list[str] = []
    with edgellm.load(art, n_ctx=256) as model:
        session = ChatSession(model, max_tokens=6)
        worker = session.ask("hello", pieces.append, done.append)
        assert worker is not threading.current_thread()
        worker.join(60)
        assert len(done) == 1 and "tok/s" in done[0] and session.history[-1]["role"] == "assistant"
        with session._busy:  # a second question while one is being answered is refused, not interleaved
            with pytest.raises(RuntimeError, match="still answering"):
                session.ask("again", pieces.append, done.append)
        session.ask("again", pieces.append, done.append).join(60)
    assert len(done) == 2 and len(session.history) == 4


def test_edge_build_for_a_profile(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    from edge_build import build_for_profile

    report = build_for_profile(tiny_models(), tmp_path / "edge", "raspberry-pi-5", max_memory="1GiB", context=256)
    assert report["format"] == "gguf" and report["smoke_tokens"] >= 1
    assert Path(str(report["artifact"])).is_file() and report["reasons"]
    assert json.loads((tmp_path / "edge" / "edgellm.json").read_text())["quant"] == report["quant"]
