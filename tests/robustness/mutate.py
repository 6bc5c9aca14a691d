"""A seeded mutator: byte-level mutations (bit flips, interesting integers at field positions, truncation,
splices) and JSON-level mutations (values swapped for hostile ones of every type, deep nesting, huge numbers)."""
from __future__ import annotations

import json
import random
import struct
from typing import Any, Sequence

INTERESTING = [0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 33, 63, 64, 127, 128, 255, 256, 1023, 4096, 65535, 65536,
               2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**40, 2**53, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def mutate_bytes(data: bytes, rng: random.Random, slots: Sequence[tuple[int, int]] = ()) -> bytes:
    """1-3 mutations of `data`. `slots` lists (offset, size) of integer fields to hit with interesting values."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if slots and op < 0.5:
            off, size = rng.choice(slots)
            value = rng.choice(INTERESTING) % (1 << (8 * size))
            buf[off:off + size] = value.to_bytes(size, "little")
        elif op < 0.65 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op < 0.75 and buf:
            i = rng.randrange(len(buf))
            buf[i] = rng.randrange(256)
        elif op < 0.82 and len(buf) > 8:
            i = rng.randrange(len(buf) - 8)
            buf[i:i + 8] = struct.pack("<Q", rng.choice(INTERESTING) % 2**64)
        elif op < 0.88:
            del buf[rng.randrange(len(buf) + 1):]
        elif op < 0.94 and buf:
            i = rng.randrange(len(buf))
            j = min(len(buf), i + rng.randint(1, 64))
            buf[i:i] = buf[i:j] * rng.randint(1, 4)
        elif buf:
            i = rng.randrange(len(buf))
            del buf[i:i + rng.randint(1, 64)]
    return bytes(buf)


def hostile_values(rng: random.Random) -> Any:
    return rng.choice([
        None, True, False, 0, -1, 1, 2**31, 2**32, 2**63, 2**64, 10**30, -(2**63), 0.5, -0.0, 1e308, 1e-308,
        "", "x", "\udc80", "a\ud800b", "\U0001F600", "\x00", "a" * 1000, [], [1], {},
        {"a": 1}, [[[[1]]]], "NaN", "0x10", 3.5, "32",
    ])


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if len(prefix) > 8:
        return out
    if isinstance(doc, dict):
        for k, v in list(doc.items())[:200]:
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i in sorted({0, len(doc) // 2, len(doc) - 1} if doc else set()):
            out += _paths(doc[i], prefix + (i,))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return doc


def mutate_json(doc: Any, rng: random.Random, keys: Sequence[str] = ()) -> Any:
    """A mutated deep copy: a value replaced (by a hostile one, a deep nest, a huge number), a key deleted or a
    named key set. `keys` are top-level keys worth hitting directly (config hyperparameters)."""
    doc = json.loads(json.dumps(doc))   # a deep copy that never recurses in Python
    for _ in range(rng.randint(1, 3)):
        paths = _paths(doc)
        op = rng.random()
        if keys and isinstance(doc, dict) and op < 0.45:
            doc[rng.choice(keys)] = hostile_values(rng) if rng.random() < 0.6 else rng.choice(INTERESTING)
        elif op < 0.75:
            doc = _set(doc, rng.choice(paths[1:] or [()]), hostile_values(rng))
        elif op < 0.85:
            nest: Any = 1
            for _ in range(rng.choice([10, 70, 1000, 5000])):
                nest = [nest]
            doc = _set(doc, rng.choice(paths[1:] or [()]), nest)
        elif op < 0.95 and len(paths) > 1:
            path = rng.choice(paths[1:])
            parent = doc
            for k in path[:-1]:
                parent = parent[k]
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, list) and parent:
                parent.pop(path[-1] if path[-1] < len(parent) else -1)
        else:
            doc = _set(doc, rng.choice(paths[1:] or [()]), 10 ** rng.choice([19, 40, 400, 5000]))
    return doc


def json_bytes(doc: Any, rng: random.Random) -> bytes:
    """Serialize, sometimes damaged at the byte level (truncation, bad UTF-8, NaN literals)."""
    import json
    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        text = json.dumps(doc).encode()
    except (RecursionError, ValueError):
        text = b"[" * 6000 + b"]" * 6000
    finally:
        sys.setrecursionlimit(old)
    r = rng.random()
    if r < 0.05:
        return text[: rng.randrange(len(text) + 1)]
    if r < 0.1:
        i = rng.randrange(len(text) + 1)
        return text[:i] + b"\xff\xfe" + text[i:]
    if r < 0.13:
        return text.replace(b"1", b"NaN", 1)
    if r < 0.16:
        return b"[" * 100000 + b"]" * 100000
    return text
