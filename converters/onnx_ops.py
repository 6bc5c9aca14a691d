"""A streaming ONNX graph writer and the layer-level ops the graph builder composes.

Weights never accumulate in memory: each initializer's bytes are appended to the external data file
the moment it is created (aligned), and the graph keeps only a pointer (location, offset, length).
The protobuf itself stays small, so files past protobuf's 2 GB limit are handled by construction.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import ConversionError
from .quant import BlockQuant, QuantSpec, pack_uint4, quantize_blocks

if TYPE_CHECKING:
    from .onnx_stream import QuantizeFn, Source

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
OPSET = 21            # blocked DequantizeLinear with uint4 needs opset 21
INLINE_LIMIT = 1024   # initializers up to this many bytes stay inside model.onnx
ALIGN = 64

_NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
               np.dtype(np.float16): TensorProto.FLOAT16,
               np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
               np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
               np.dtype(np.bool_): TensorProto.BOOL}


class GraphWriter:
    """Collects nodes; appends initializer bytes to `data_path` as they come (refuses use after finish)."""

    def __init__(self, data_path: Path, data_location: str, threads: int = 1) -> None:
        self.data_location = data_location
        self.threads = max(1, int(threads))
        # quantization workers for streamed weights (onnx_stream.py); None: quantize in line
        self.pool: ThreadPoolExecutor | None = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self._data: BinaryIO | None = open(data_path, "wb")
        self._offset = 0
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.tensor_types: Counter[str] = Counter()
        self._names: Counter[str] = Counter()

    # -- names and tensors ---------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        self._names[base] += 1
        n = self._names[base]
        return base if n == 1 else f"{base}_{n}"

    def raw_initializer(self, name: str, data_type: int, dims: Sequence[int], raw: bytes, label: str) -> str:
        t = TensorProto(name=name, data_type=data_type, dims=list(dims))
        if len(raw) <= INLINE_LIMIT:
            t.raw_data = raw
        else:
            if self._data is None:
                raise ConversionError("the ONNX writer is closed; no tensor may be added after finish()")
            pad = (-self._offset) % ALIGN
            if pad:
                self._data.write(b"\0" * pad)
                self._offset += pad
            self._data.write(raw)
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", self.data_location), ("offset", str(self._offset)), ("length", str(len(raw)))):
                t.external_data.add(key=k, value=v)
            self._offset += len(raw)
            self.tensor_types[label] += 1
        self.initializers.append(t)
        return name

    def external_region(self, name: str, data_type: int, dims: Sequence[int], nbytes: int, label: str) -> int:
        """Reserve `nbytes` (aligned) in the data file for an initializer whose bytes come later, in pieces,
        through write_at (in any order); returns the region's offset. The file is extended with zeros."""
        if self._data is None:
            raise ConversionError("the ONNX writer is closed; no tensor may be added after finish()")
        if nbytes <= INLINE_LIMIT:
            raise ConversionError(f"{name}: a region of {nbytes} bytes would be inlined; use raw_initializer")
        self._offset += (-self._offset) % ALIGN
        start = self._offset
        self._offset += nbytes
        self._data.flush()
        self._data.truncate(self._offset)
        self._data.seek(self._offset)
        t = TensorProto(name=name, data_type=data_type, dims=list(dims), data_location=TensorProto.EXTERNAL)
        for k, v in (("location", self.data_location), ("offset", str(start)), ("length", str(nbytes))):
            t.external_data.add(key=k, value=v)
        self.tensor_types[label] += 1
        self.initializers.append(t)
        return start

    def write_at(self, offset: int, data: bytes | np.ndarray) -> None:
        """Write bytes of a reserved region (external_region) at absolute `offset` in the data file."""
        if self._data is None:
            raise ConversionError("the ONNX writer is closed; no tensor may be added after finish()")
        self._data.flush()
        buf: bytes | np.ndarray = data.tobytes() if isinstance(data, np.ndarray) and not data.flags.c_contiguous \
            else data
        view = memoryview(buf).cast("B")  # type: ignore[arg-type]  # numpy arrays export the buffer protocol
        while len(view):
            n = os.pwrite(self._data.fileno(), view, offset)
            view, offset = view[n:], offset + n

    def initializer(self, name: str, array: np.ndarray, label: str | None = None) -> str:
        a = np.asarray(array)
        a = a if a.flags.c_contiguous else np.ascontiguousarray(a)   # (ascontiguousarray makes scalars 1-D)
        dtype = _NP_TO_ONNX.get(a.dtype)
        if dtype is None:
            raise ConversionError(f"cannot store {a.dtype} tensor {name} in ONNX")
        return self.raw_initializer(name, dtype, a.shape, a.tobytes(), label or a.dtype.name)

    def const(self, value: Any, dtype: Any = np.int64, base: str = "const") -> str:
        return self.initializer(self.fresh(base), np.asarray(value, dtype=dtype))

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, domain: str = "", base: str | None = None,
             **attrs: Any) -> list[str]:
        name = self.fresh(base or op)
        outs = [f"{name}/out{i}" if n_out > 1 else f"{name}/out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, domain=domain or None, **attrs))
        return outs

    def op(self, op: str, *inputs: str, domain: str = "", base: str | None = None, **attrs: Any) -> str:
        return self.node(op, inputs, 1, domain, base, **attrs)[0]

    def output(self, op: str, inputs: Sequence[str], output: str, domain: str = "", **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=self.fresh(op), domain=domain or None,
                                           **attrs))
        return output

    def finish(self) -> int:
        """Close the data file; returns its size in bytes."""
        if self._data is not None:
            self._data.close()
            self._data = None
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        return self._offset

    def model(self, graph_name: str, fused: bool) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(MS_DOMAIN, 1)] if fused else [])
        model = helper.make_model(graph, opset_imports=opsets, producer_name="edgellm")
        model.ir_version = 10
        return model


# -- layer-level helpers ---------------------------------------------------------------------------
def nbits_names(name: str, spec: QuantSpec) -> tuple[str, str, str]:
    """Initializer names of a MatMulNBits weight (qweight, scales, zero points or "" when symmetric)."""
    return name + ".qweight", name + ".scales", "" if spec.symmetric else name + ".qzeros"


def store_nbits(g: GraphWriter, name: str, spec: QuantSpec, bq: BlockQuant) -> tuple[str, str, str]:
    """MatMulNBits' B [N, blocks, bytes], scales [N, blocks] and packed zero points [N, bytes]."""
    n, k = bq.shape
    nb = k // spec.block_size
    qn, sn, zn = nbits_names(name, spec)
    g.initializer(qn, bq.packed().reshape(n, nb, -1), spec.label)
    g.initializer(sn, bq.scales.reshape(n, nb))
    if zn:
        g.initializer(zn, bq.packed_zero_points().reshape(n, -1))
    return qn, sn, zn


def linear(g: GraphWriter, x: str, w: "np.ndarray | Source", spec: QuantSpec, name: str, fused: bool,
           accuracy_level: int, bias: np.ndarray | None = None, bq: BlockQuant | None = None,
           quantize: "QuantizeFn | None" = None, slice_elements: int | None = None) -> str:
    """y = x @ w.T (+ bias) for an HF weight w [N, K] (an array or a row-slice Source), stored as `spec` says
    (`bq`: already quantized; `quantize`: how to quantize a row slice, default quantize_blocks). The fused
    int path and float weights stream slice by slice (onnx_stream.py)."""
    from .onnx_stream import Source, store_float_streamed, store_nbits_streamed

    src = Source.of(w)
    n, k = src.shape
    if spec.bits and fused:
        qnames = store_nbits(g, name, spec, bq) if bq is not None else \
            store_nbits_streamed(g, name, spec, src, quantize or quantize_blocks, slice_elements)
        y = g.op("MatMulNBits", x, *qnames, domain=MS_DOMAIN, base=name + "/MatMulNBits", K=k, N=n,
                 bits=spec.bits, block_size=spec.block_size, accuracy_level=accuracy_level)
    elif spec.bits:
        if bq is None:
            bq = (quantize or quantize_blocks)(src.full(), spec, name)
        # standard ops: blocked DequantizeLinear (opset 21) on w.T [K, N], blocks along K (axis 0)
        assert bq is not None
        q_t = bq.values.reshape(n, k).T.reshape(-1)
        s_t = np.ascontiguousarray(bq.scales.T)                  # [K/block, N]
        z_t = np.ascontiguousarray(bq.zero_points.T)
        if spec.bits == 4:
            dtype = TensorProto.UINT4
            q_raw = pack_uint4(np.pad(q_t, (0, q_t.size % 2))).tobytes()
            z_raw = pack_uint4(np.pad(z_t.reshape(-1), (0, z_t.size % 2))).tobytes()
        else:
            dtype, q_raw, z_raw = TensorProto.UINT8, q_t.astype(np.uint8).tobytes(), z_t.tobytes()
        qn = g.raw_initializer(name + ".qweight", dtype, (k, n), q_raw, spec.label)
        zn = g.raw_initializer(name + ".qzeros", dtype, z_t.shape, z_raw, "zero_points")
        wt = g.op("DequantizeLinear", qn, g.initializer(name + ".scales", s_t), zn, base=name + "/Dequantize",
                  axis=0, block_size=spec.block_size)
        y = g.op("MatMul", x, wt, base=name + "/MatMul")
    else:
        half = spec.kind == "fp16"
        wt = store_float_streamed(g, name + ".weight", src, np.float16 if half else np.float32, spec.kind,
                                  transpose=True)
        if half:
            wt = g.op("Cast", wt, to=TensorProto.FLOAT)
        y = g.op("MatMul", x, wt, base=name + "/MatMul")
    if bias is not None:
        y = g.op("Add", y, g.initializer(name + ".bias", np.asarray(bias, np.float32)), base=name + "/Add")
    return y


def quantized_gather(g: GraphWriter, ids: str, name: str, spec: QuantSpec, rows: int) -> str:
    """Embedding rows looked up straight from a MatMulNBits weight `name` (stored by `linear`, before or
    after this node): GatherBlockQuantized over a [rows, K*bits/8] view of its packed bytes."""
    qn, sn, zn = nbits_names(name, spec)
    view = g.op("Reshape", qn, g.const([rows, -1]), base=name + "/rows")
    ins = [view, ids, sn] + ([zn] if zn else [])
    return g.op("GatherBlockQuantized", *ins, domain=MS_DOMAIN, base=name + "/GatherBlockQuantized",
                bits=spec.bits, block_size=spec.block_size, gather_axis=0, quantize_axis=1)


def rms_norm(g: GraphWriter, x: str, weight: np.ndarray, eps: float, name: str, fused: bool) -> str:
    gamma = g.initializer(name + ".weight", np.asarray(weight, np.float32))
    if fused:
        return g.op("SimplifiedLayerNormalization", x, gamma, base=name, axis=-1, epsilon=eps, stash_type=1)
    ms = g.op("ReduceMean", g.op("Mul", x, x), g.const([-1]), keepdims=1)
    inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", ms, g.const(eps, np.float32))))
    return g.op("Mul", g.op("Mul", x, inv), gamma, base=name)


def skip_rms_norm(g: GraphWriter, x: str, residual: str, weight: np.ndarray, eps: float, name: str,
                  fused: bool) -> tuple[str, str]:
    """(rms_norm(x + residual), x + residual)."""
    if fused:
        gamma = g.initializer(name + ".weight", np.asarray(weight, np.float32))
        out = g.node("SkipSimplifiedLayerNormalization", [x, residual, gamma], 4, MS_DOMAIN, name, epsilon=eps)
        return out[0], out[3]
    total = g.op("Add", x, residual)
    return rms_norm(g, total, weight, eps, name, fused), total


def rope_caches(g: GraphWriter, head_dim: int, theta: float, max_pos: int, scaling: dict[str, Any] | None,
                prefix: str = "rope", seq_len: int | None = None) -> tuple[str, str]:
    """cos/sin caches [max_pos, head_dim/2] float32, built in the graph by the angle-addition identity from two
    small tables computed here in float64: position p = c * step + f, cos(p w) = cos(c step w) cos(f w) -
    sin(c step w) sin(f w) (and sin likewise), step ~ sqrt(max_pos). The file carries 2 x (max_pos/step + step)
    rows instead of 2 x max_pos (1B-class models at 128k context: ~0.4 MiB, not 64 MiB), every value is within
    ~2e-7 of the float64 table (a float32 angle p * w would be off by up to ulp(p w), 0.008 rad at 128k), and
    only float32 Mul/Sub/Add/Reshape/Slice are used: onnxruntime folds them once at load, and no float64 kernel
    (Cos/Sin on doubles need onnxruntime >= 1.29) is asked of older runtimes on edge targets.
    head_dim: the rotated dims."""
    from .rope import rope_inv_freq, rope_mscale

    inv = rope_inv_freq(head_dim, theta, scaling, seq_len).astype(np.float64)         # [hd/2]
    step = max(1, int(np.ceil(np.sqrt(max_pos))))
    n_coarse = -(-max_pos // step)
    mscale = rope_mscale(scaling)
    coarse = (np.arange(n_coarse, dtype=np.float64) * step)[:, None] * inv[None, :]   # [n_coarse, hd/2]
    fine = np.arange(step, dtype=np.float64)[:, None] * inv[None, :]                  # [step, hd/2]
    cc = g.initializer(f"{prefix}.coarse_cos", (mscale * np.cos(coarse)).astype(np.float32)[:, None, :])
    cs = g.initializer(f"{prefix}.coarse_sin", (mscale * np.sin(coarse)).astype(np.float32)[:, None, :])
    fc = g.initializer(f"{prefix}.fine_cos", np.cos(fine).astype(np.float32)[None, :, :])
    fs = g.initializer(f"{prefix}.fine_sin", np.sin(fine).astype(np.float32)[None, :, :])
    shape = g.const([n_coarse * step, inv.shape[0]])
    starts, ends, axes = g.const([0]), g.const([max_pos]), g.const([0])
    cos3 = g.op("Sub", g.op("Mul", cc, fc), g.op("Mul", cs, fs), base=f"{prefix}/cos")   # [n_coarse, step, hd/2]
    sin3 = g.op("Add", g.op("Mul", cs, fc), g.op("Mul", cc, fs), base=f"{prefix}/sin")
    cos = g.output("Slice", [g.op("Reshape", cos3, shape), starts, ends, axes], f"{prefix}.cos_cache")
    sin = g.output("Slice", [g.op("Reshape", sin3, shape), starts, ends, axes], f"{prefix}.sin_cache")
    return cos, sin
