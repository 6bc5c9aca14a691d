"""Facts of a parsed ONNX decoder graph the planner needs: the weight bytes a decode step reads and the recipe
it was built with. Plain functions over the graph (an `onnx.ModelProto` loaded without external data); the
caller does the reading."""
from __future__ import annotations

from typing import Any

# ONNX TensorProto data types -> bits per element (packed 4-bit types count half a byte)
_ONNX_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 16: 16,
              21: 4, 22: 4}


def onnx_read_bytes(model: Any) -> int:
    """Initializer bytes a decode step reads: everything feeding a matmul or other compute; a table that only
    Gather/GatherBlockQuantized read (an embedding not shared with the head) is read one row per token."""
    users: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.op_type)
    total = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= int(d)
        size = n * _ONNX_BITS.get(init.data_type, 8) // 8
        ops = users.get(init.name, set())
        if ops and ops <= {"Gather", "GatherBlockQuantized"}:
            continue
        total += size
    return total


def onnx_recipe(model: Any) -> str:
    """The recipe an ONNX decoder was built with, from its graph: MatMulNBits' bits, else the float type."""
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            bits = next((int(a.i) for a in node.attribute if a.name == "bits"), 4)
            return f"int{bits}"
    if any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul") for n in model.graph.node):
        return "int8"
    types = [i.data_type for i in model.graph.initializer if len(i.dims) == 2]
    return "fp16" if types and max(set(types), key=types.count) == 10 else "fp32"
