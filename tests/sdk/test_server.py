"""`edgellm serve` driven by the official `openai` client against the real SmolLM2 artifacts (GGUF and ONNX)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

import edgellm
from tests.sdk.server_harness import RunningServer

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def gguf_server(smollm2_artifact) -> Iterator[RunningServer]:  # noqa: ANN001
    model = edgellm.load(smollm2_artifact("Q8_0"), n_ctx=512)
    server = RunningServer([model], api_key="sk-test", max_queue=0)
    yield server
    server.stop()
    model.close()


def _stream_text(stream: Any) -> tuple[str, list[Any]]:
    chunks = list(stream)
    text = "".join((c.choices[0].delta.content or "") if hasattr(c.choices[0], "delta") else c.choices[0].text
                   for c in chunks if c.choices)
    return text, chunks


def test_chat_and_completion_streamed_equal_non_streamed(gguf_server: RunningServer) -> None:
    client = gguf_server.client("sk-test")
    full = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=24, temperature=0)
    text, chunks = _stream_text(client.chat.completions.create(
        model="smollm2", messages=MESSAGES, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert full.choices[0].message.content and text == full.choices[0].message.content
    assert full.usage.completion_tokens == chunks[-1].usage.completion_tokens > 0
    assert full.usage.prompt_tokens > 10 and full.choices[0].finish_reason in ("stop", "length")
    timings = full.model_extra["timings"]
    assert timings["ttft_ms"] > 0 and timings["decode_tokens_per_s"] > 0 and timings["energy_method"]
    assert chunks[0].choices[0].delta.role == "assistant"

    comp = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=12,
                                     temperature=0)
    streamed, _ = _stream_text(client.completions.create(model="smollm2", prompt="The capital of France is",
                                                         max_tokens=12, temperature=0, stream=True))
    assert comp.choices[0].text and streamed == comp.choices[0].text
    assert comp.usage.completion_tokens == 12 and comp.choices[0].finish_reason == "length"
    ids = [m.id for m in client.models.list().data]
    assert ids == ["smollm2"]


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(gguf_server: RunningServer) -> None:
    good = gguf_server.client("sk-test")
    with pytest.raises(openai.AuthenticationError):
        gguf_server.client("sk-wrong").chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=2)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        good.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)
    for bad in ({"max_tokens": -5}, {"max_tokens": 10 ** 12}, {"temperature": 5}, {"n": 3}, {"top_logprobs": 2},
                {"stop": ["a", "b", "c", "d", "e"]}, {"response_format": {"type": "xml"}}):
        with pytest.raises(openai.BadRequestError):
            good.chat.completions.create(model="smollm2", messages=MESSAGES, **bad)
    headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    url = gguf_server.url + "/v1/chat/completions"
    malformed = httpx.post(url, content=b'{"model": "smollm2", "messages": [', headers=headers)
    assert malformed.status_code == 400 and malformed.json()["error"]["type"] == "invalid_request_error"
    big = httpx.post(url, content=b"x" * (2 << 20), headers=headers)
    assert big.status_code == 413 and "larger than" in big.json()["error"]["message"]
    nan = httpx.post(url, content=b'{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], '
                              b'"temperature": NaN}', headers=headers)
    assert nan.status_code == 400 and nan.json()["error"]["param"] == "temperature"
    empty = httpx.post(url, json={"model": "smollm2", "messages": []}, headers=headers)
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages"
    # a max_tokens past the context is clamped to it, not refused
    ok = good.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=100_000, temperature=0)
    assert ok.choices[0].message.content and ok.usage.total_tokens <= 512
    metrics = httpx.get(gguf_server.url + "/metrics", headers=headers).text
    assert 'edgellm_requests_total{model="smollm2",endpoint="chat",status="401"} 1' in metrics
    assert "edgellm_ttft_seconds_bucket" in metrics and "edgellm_completion_tokens_total" in metrics


def test_full_queue_answers_503_and_a_cancelled_stream_frees_its_slot(gguf_server: RunningServer) -> None:
    client = gguf_server.client("sk-test")
    stream = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=400, temperature=0.7,
                                            seed=1, stream=True)
    first = [next(iter(stream)) for _ in range(3)]
    assert first and gguf_server.health()["busy"] == 1
    with pytest.raises(openai.APIStatusError) as busy:  # one slot, max_queue 0: no room to wait
        client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=2)
    assert busy.value.status_code == 503 and busy.value.response.headers["retry-after"] == "2"
    closed = time.monotonic()
    stream.close()  # the client goes away mid-answer
    while gguf_server.health()["busy"]:
        assert time.monotonic() - closed < 2.0, "the cancelled generation kept its slot"
        time.sleep(0.01)
    freed_s = time.monotonic() - closed
    after = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=4, temperature=0)
    assert after.choices[0].message.content is not None
    per_token = 1.0 / after.model_extra["timings"]["decode_tokens_per_s"] if after.usage.completion_tokens > 1 else 0.05
    print(f"\nslot freed {freed_s * 1000:.0f} ms after the disconnect (one token: {per_token * 1000:.0f} ms)")
    assert freed_s < max(0.25, 5 * per_token)


def test_load_eight_clients_by_25_requests(smollm2_artifact) -> None:  # noqa: ANN001
    model = edgellm.load(smollm2_artifact("Q8_0"), n_ctx=512)
    server = RunningServer([model], max_queue=16)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client_loop(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for i in range(25):
                t0 = time.perf_counter()
                r = http.post("/v1/chat/completions", json={
                    "model": "smollm2", "max_tokens": 8, "temperature": 0, "stream": False,
                    "messages": [{"role": "user", "content": f"Client {worker} asks question {i}: say hi."}]})
                row = {"status": r.status_code, "s": time.perf_counter() - t0}
                if r.status_code == 200:
                    body = r.json()
                    row["ok"] = bool(body["choices"][0]["message"]["content"] is not None and body["usage"]["total_tokens"])
                    row["ttft_ms"] = body["timings"]["ttft_ms"]
                with lock:
                    results.append(row)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - t0
    server.stop()
    model.close()
    done = [r for r in results if r["status"] == 200]
    assert len(results) == 200
    assert all(r["status"] in (200, 503) for r in results) and all(r.get("ok") for r in done)
    lat = sorted(r["s"] for r in done)
    ttft = sorted(r["ttft_ms"] for r in done)
    p = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    report = {"requests": len(results), "ok": len(done), "503": len(results) - len(done),
              "throughput_rps": round(len(done) / wall, 2), "latency_p50_s": round(p(lat, 0.5), 3),
              "latency_p95_s": round(p(lat, 0.95), 3), "ttft_p50_ms": round(p(ttft, 0.5), 1),
              "ttft_p95_ms": round(p(ttft, 0.95), 1), "wall_s": round(wall, 1)}
    print("\nload test (8 clients x 25 requests, 8 tokens each, 1 slot, queue 16):", json.dumps(report))
    assert len(done) == 200  # a queue of 16 holds 8 clients: nothing is turned away


def test_onnx_artifact_streams_the_same_text(smollm2_onnx_int4: Path) -> None:
    model = edgellm.load(smollm2_onnx_int4, n_ctx=512)
    server = RunningServer([model])
    try:
        client = server.client()
        full = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=16, temperature=0)
        text, _ = _stream_text(client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=16,
                                                              temperature=0, stream=True))
        assert full.choices[0].message.content and text == full.choices[0].message.content
        assert "onnxruntime" in full.model_extra["timings"]["backend"]
        scored = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=6, temperature=0,
                                                logprobs=True, top_logprobs=2)
        content = scored.choices[0].logprobs.content
        assert len(content) == scored.usage.completion_tokens and all(e.top_logprobs[0].token == e.token
                                                                      for e in content)
        with pytest.raises(openai.BadRequestError, match="GGUF"):  # no grammar engine behind onnxruntime
            client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=4,
                                           response_format={"type": "json_object"})
    finally:
        server.stop()
        model.close()


def test_json_mode_and_schema_hold_the_output_to_json(gguf_server: RunningServer) -> None:
    client = gguf_server.client("sk-test")
    ask = [{"role": "user", "content": "Describe a cat as JSON with a name and an age."}]
    any_obj = client.chat.completions.create(model="smollm2", messages=ask, max_tokens=48, temperature=0,
                                             response_format={"type": "json_object"})
    if any_obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(any_obj.choices[0].message.content), dict)
    else:  # cut by max_tokens: still the start of a JSON object
        assert any_obj.choices[0].message.content.lstrip().startswith("{")
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    typed = client.chat.completions.create(
        model="smollm2", messages=ask, max_tokens=64, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": schema}})
    data = json.loads(typed.choices[0].message.content)
    assert set(data) == {"name", "age"} and isinstance(data["name"], str) and isinstance(data["age"], int)


def test_logprobs_chat_and_completion_streamed_and_not(gguf_server: RunningServer) -> None:
    client = gguf_server.client("sk-test")
    full = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=12, temperature=0,
                                          logprobs=True, top_logprobs=3)
    content = full.choices[0].logprobs.content
    assert len(content) == full.usage.completion_tokens
    assert "".join(e.token for e in content) == full.choices[0].message.content
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3 and bytes(e.bytes).decode() == e.token
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)
        assert e.top_logprobs[0].token == e.token and abs(e.top_logprobs[0].logprob - e.logprob) < 1e-9  # greedy
    streamed = [e for c in client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=12,
                                                          temperature=0, logprobs=True, top_logprobs=3, stream=True)
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(streamed, content)) < 1e-3

    comp = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=6,
                                     temperature=0, logprobs=2)
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == comp.choices[0].text and lp.text_offset[0] == 0
    assert lp.text_offset[1] == len(lp.tokens[0]) and all(len(t) == 2 for t in lp.top_logprobs)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=2, top_logprobs=30,
                                       logprobs=True)
