"""Set an x86 run and an emulated aarch64 run of check_model.py side by side.

    python compare.py host.json target.json        prints agreement and greedy comparison
"""
from __future__ import annotations

import json
import sys
from typing import Any


def compare(host: dict[str, Any], target: dict[str, Any], name: str = "") -> dict[str, Any]:
    """Teacher-forced next-token agreement on the same token ids, and the greedy continuations."""
    if host["tokens"] != target["tokens"]:
        raise SystemExit(f"{name}: the two runs tokenized the text differently; nothing to compare")
    pairs = list(zip(host["argmax"], target["argmax"]))
    diff = [i for i, (a, b) in enumerate(pairs) if a != b]
    return {
        "target": name, "backend": target["backend"], "positions": len(pairs),
        "agreement": round(1 - len(diff) / max(len(pairs), 1), 4),
        "disagreements": [{"position": i, "host": pairs[i][0], "target": pairs[i][1],
                           "host_top2_margin": round(host["top2_margin"][i], 4)} for i in diff],
        # the target's choice among the host's two most likely tokens (a near-tie, not a different model)
        "target_in_host_top2": round(sum(t in h[:2] for t, h in zip(target["argmax"], host.get("top5", [])))
                                     / max(len(pairs), 1), 4) if host.get("top5") else None,
        # two CPU kernel paths of the same llama.cpp build on the host (repacked Q4_0 vs plain): the yardstick
        "host_kernel_paths_agreement": round(sum(a == b for a, b in zip(host["argmax"], host["argmax_safe_kernels"]))
                                             / max(len(pairs), 1), 4) if host.get("argmax_safe_kernels") else None,
        "greedy_identical": host["greedy_tokens"] == target["greedy_tokens"],
        "greedy_common_prefix": next((i for i, (a, b) in enumerate(zip(host["greedy_tokens"], target["greedy_tokens"]))
                                      if a != b), min(len(host["greedy_tokens"]), len(target["greedy_tokens"]))),
        "greedy_text_host": host["greedy_text"], "greedy_text_target": target["greedy_text"],
        "host": {"machine": host["machine"], "versions": host["versions"], "seconds": host["seconds"]},
        "emulated": {"machine": target["machine"], "versions": target["versions"], "seconds": target["seconds"]},
    }


def markdown(summary: dict[str, Any]) -> str:
    rows = ["| target | backend | agreement (teacher-forced) | target in host top-2 | host kernel paths agree | "
            "greedy 16 identical | emulated load / forced / greedy s | host forced s |",
            "|---|---|---|---|---|---|---|---|"]
    for r in summary["results"]:
        e, h = r["emulated"]["seconds"], r["host"]["seconds"]
        top2, paths = r.get("target_in_host_top2"), r.get("host_kernel_paths_agreement")
        rows.append(f"| {r['target']} | {r['backend']} | {r['agreement']:.2%} ({r['positions']} positions) | "
                    f"{'-' if top2 is None else f'{top2:.2%}'} | {'-' if paths is None else f'{paths:.2%}'} | "
                    f"{'yes' if r['greedy_identical'] else 'NO, first ' + str(r['greedy_common_prefix'])} | "
                    f"{e['load']} / {e['teacher_forced']} / "
                    f"{e['greedy']} | {h['teacher_forced']} |")
    cpu = summary.get("target_devices", {}).get("cpu", {})
    versions = summary["results"][0]["emulated"]["versions"] if summary["results"] else {}
    lines = rows + ["", f"emulator: {summary.get('qemu', '?')}; target `edgellm devices`: arch "
                        f"{cpu.get('arch', '?')}, {cpu.get('logical_cores', '?')} logical cores",
                    "target versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
                    "times (s): " + ", ".join(f"{k} {v}" for k, v in summary.get("times_s", {}).items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    a, b = (json.load(open(p)) for p in sys.argv[1:3])
    print(json.dumps(compare(a, b), indent=1))
