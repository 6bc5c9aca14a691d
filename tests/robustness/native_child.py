"""Child process for native loads: `python -m tests.robustness.native_child FILE`. Loads the file with
edgellm.load and generates 4 tokens. Exit 0: ran; 3: refused with an EdgeLLMError; 4: another exception.
A signal (negative return code in the parent) is a crash."""
from __future__ import annotations

import sys


def main(path: str) -> int:
    import edgellm
    from edgellm.errors import EdgeLLMError

    try:
        with edgellm.load(path, device="cpu", n_ctx=64, threads=1) as model:
            model.generate("Hello there", max_tokens=4, temperature=0.7, seed=1)
            model.chat([{"role": "user", "content": "hi"}], max_tokens=2, temperature=0)
    except EdgeLLMError:
        return 3
    except Exception as exc:  # noqa: BLE001
        sys.stderr.write(f"UNTYPED {type(exc).__name__}: {exc}\n")
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
