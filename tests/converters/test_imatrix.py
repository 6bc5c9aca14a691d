"""Importance matrix: computed by edgellm's calibration pass, written as llama.cpp's GGUF imatrix file, and
passed to llama.cpp's quantizer in-process (llama_model_quantize_params.imatrix / tt_overrides); the Q8_0
blocks edgellm writes itself dequantize (gguf-py) to the values it intended."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgellm.converters.calibration import calibration_set
from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_types import get_quant, quantize_q8_0
from edgellm.converters.imatrix import compute_imatrix
from edgellm.converters.imatrix_file import read_imatrix, write_imatrix
from edgellm.converters.llama_quantize import quantize_gguf
from edgellm.errors import QuantizationError
from tests.fixtures.tiny import make_tiny_model

TOKENS, SEQ = 128, 64
ROLES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # hidden 256: rows fit the 256-wide super-blocks, so IQ/K types apply to every matrix (no fallbacks)
    return make_tiny_model(tmp_path_factory.mktemp("imx") / "m", hidden=256, heads=4, kv_heads=2, ffn=512)


@pytest.fixture(scope="module")
def matrix(tiny: Path):
    return compute_imatrix(tiny, tokens=TOKENS, seq_len=SEQ)


@pytest.fixture(scope="module")
def f32(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_gguf(tiny, tmp_path_factory.mktemp("f32"), "F32").path


def test_every_matrix_has_one_entry_per_input_column(matrix) -> None:
    want = {f"blk.{i}.{r}.weight": (512 if r == "ffn_down" else 256) for i in range(2) for r in ROLES}
    want["token_embd.weight"] = 256          # tied head: the LM head's input
    assert {n: v.shape[0] for n, v in matrix.means().items()} == want
    assert all(c == TOKENS for c in matrix.counts.values())
    assert (matrix.chunk_count, matrix.chunk_size) == (TOKENS // SEQ, SEQ)
    assert all(np.isfinite(v).all() and (v > 0).all() for v in matrix.means().values())


def test_first_layer_values_are_mean_squared_normed_inputs(tiny: Path, matrix) -> None:
    from safetensors.numpy import load_file

    w = load_file(str(tiny / "model.safetensors"))
    ids = calibration_set(tiny, None, TOKENS, SEQ).ids
    h = w["model.embed_tokens.weight"][ids].astype(np.float64)                          # [B, S, D]
    x = h / np.sqrt((h * h).mean(-1, keepdims=True) + 1e-5) * w["model.layers.0.input_layernorm.weight"]
    want = (x * x).reshape(-1, x.shape[-1]).mean(0)
    for role in ("attn_q", "attn_k", "attn_v"):          # one input, three weights
        np.testing.assert_allclose(matrix.mean(f"blk.0.{role}.weight"), want, rtol=2e-4)
    assert not np.allclose(matrix.mean("blk.0.ffn_gate.weight"), want, rtol=1e-2)


def test_imatrix_file_round_trips_through_gguf_py(matrix, tmp_path: Path) -> None:
    import gguf

    path = write_imatrix(matrix, tmp_path / "m.imatrix")
    assert not list(tmp_path.glob("*.partial"))
    r = gguf.GGUFReader(path)
    assert r.fields["general.type"].contents() == "imatrix"
    assert r.fields["imatrix.chunk_count"].contents() == TOKENS // SEQ
    assert r.fields["imatrix.chunk_size"].contents() == SEQ
    assert r.fields["imatrix.datasets"].contents() == ["edgellm-mix"]
    tensors = {t.name: t for t in r.tensors}
    assert set(tensors) == {n + s for n in matrix.names for s in (".in_sum2", ".counts")}
    for n in matrix.names:
        # ggml ne: in_sum2 [columns, 1 matrix], counts [1, 1 matrix] (llama.cpp's load_imatrix reads ne[0], ne[1])
        assert [int(d) for d in tensors[n + ".in_sum2"].shape] == [matrix.sums[n].size, 1]
        assert [int(d) for d in tensors[n + ".counts"].shape] == [1, 1]
        assert tensors[n + ".in_sum2"].tensor_type == gguf.GGMLQuantizationType.F32
    back = read_imatrix(path)
    assert back.names == matrix.names and back.counts == matrix.counts
    for n in matrix.names:
        np.testing.assert_allclose(back.mean(n), matrix.mean(n), rtol=1e-6)


def test_ggml_reads_the_imatrix_file_as_llama_quantize_does(matrix, tmp_path: Path) -> None:
    """llama.cpp's own GGUF parser (libggml-base, as tools/quantize's load_imatrix uses it) opens the file,
    finds the three imatrix keys, and each entry's in_sum2 / counts gives back our mean squared activations."""
    import ctypes

    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))

    class InitParams(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]

    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, InitParams]
    for fn, res, args in (("gguf_find_key", ctypes.c_int64, [ctypes.c_void_p, ctypes.c_char_p]),
                          ("gguf_get_val_u32", ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_int64]),
                          ("gguf_get_n_tensors", ctypes.c_int64, [ctypes.c_void_p]),
                          ("gguf_get_arr_n", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
                          ("ggml_get_tensor", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
                          ("ggml_nelements", ctypes.c_int64, [ctypes.c_void_p]),
                          ("ggml_get_data_f32", ctypes.POINTER(ctypes.c_float), [ctypes.c_void_p]),
                          ("gguf_free", None, [ctypes.c_void_p]), ("ggml_free", None, [ctypes.c_void_p])):
        getattr(lib, fn).restype, getattr(lib, fn).argtypes = res, args
    path = write_imatrix(matrix, tmp_path / "m.imatrix")
    ctx = ctypes.c_void_p()
    g = lib.gguf_init_from_file(str(path).encode(), InitParams(False, ctypes.pointer(ctx)))
    assert g, "ggml could not parse the file"
    try:
        keys = {k: lib.gguf_find_key(g, k.encode()) for k in ("imatrix.datasets", "imatrix.chunk_count",
                                                              "imatrix.chunk_size")}
        assert min(keys.values()) >= 0
        assert lib.gguf_get_val_u32(g, keys["imatrix.chunk_count"]) == TOKENS // SEQ
        assert lib.gguf_get_val_u32(g, keys["imatrix.chunk_size"]) == SEQ
        assert lib.gguf_get_arr_n(g, keys["imatrix.datasets"]) == 1
        assert lib.gguf_get_n_tensors(g) == 2 * len(matrix.names)
        for name in matrix.names:
            sums = lib.ggml_get_tensor(ctx, (name + ".in_sum2").encode())
            counts = lib.ggml_get_tensor(ctx, (name + ".counts").encode())
            assert sums and counts, name
            ne = (ctypes.c_int64 * 4).from_address(sums + 16)     # ggml_tensor: type, buffer, ne[4], ...
            assert (ne[0], ne[1]) == (matrix.sums[name].size, 1) and lib.ggml_nelements(sums) == ne[0]
            assert lib.ggml_nelements(counts) == 1
            k = int(ne[0])
            values = np.ctypeslib.as_array(lib.ggml_get_data_f32(sums), (k,)) / lib.ggml_get_data_f32(counts)[0]
            np.testing.assert_allclose(values, matrix.mean(name), rtol=1e-6)
    finally:
        lib.gguf_free(g)
        lib.ggml_free(ctx)


def test_imatrix_type_is_refused_without_and_made_with_the_matrix(f32: Path, matrix, tmp_path: Path) -> None:
    import gguf

    q = get_quant("IQ2_XS")
    with pytest.raises(QuantizationError, match="imatrix|importance"):
        quantize_gguf(f32, tmp_path / "plain.gguf", q.file_type, 1)
    rep = quantize_gguf(f32, tmp_path / "iq2.gguf", q.file_type, 1, imatrix=matrix.means())
    assert rep.imatrix_entries == len(matrix.names) and not rep.imatrix_missing
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "iq2.gguf").tensors}
    assert types["blk.0.ffn_up.weight"] == "IQ2_XS"


def test_the_matrix_changes_k_quant_codes(f32: Path, matrix, tmp_path: Path) -> None:
    """A K-quant made with the matrix differs from one made without (llama.cpp really used it), and a matrix
    that favours some columns lowers their error."""
    import gguf

    def weights(path: Path) -> np.ndarray:
        t = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.0.ffn_gate.weight")
        return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(512, 256)

    q = get_quant("Q4_K_S").file_type
    quantize_gguf(f32, tmp_path / "plain.gguf", q, 1)
    skew = matrix.means()
    favoured = np.zeros(256, bool)
    favoured[::4] = True
    skew["blk.0.ffn_gate.weight"] = np.where(favoured, 100.0, 0.01).astype(np.float32)
    quantize_gguf(f32, tmp_path / "imx.gguf", q, 1, imatrix=skew)
    ref = weights(f32)
    plain, imx = weights(tmp_path / "plain.gguf"), weights(tmp_path / "imx.gguf")
    assert not np.array_equal(plain, imx)
    err = lambda w: float(np.mean((w - ref)[:, favoured] ** 2))  # noqa: E731
    assert err(imx) < 0.8 * err(plain)


def test_tensor_type_overrides_pick_per_tensor_types(f32: Path, tmp_path: Path) -> None:
    import gguf

    rep = quantize_gguf(f32, tmp_path / "o.gguf", get_quant("Q4_K_M").file_type, 1,
                        tensor_types=[(r"blk\.1\.ffn_down\.weight", "Q8_0"), ("attn_v", "Q5_K")])
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "o.gguf").tensors}
    assert types["blk.1.ffn_down.weight"] == "Q8_0" and types["blk.0.ffn_down.weight"] != "Q8_0"
    assert types["blk.0.attn_v.weight"] == types["blk.1.attn_v.weight"] == "Q5_K"
    assert "manual override" in rep.log_text
    with pytest.raises(QuantizationError, match="unknown GGML type"):
        quantize_gguf(f32, tmp_path / "x.gguf", get_quant("Q4_K_M").file_type, 1, tensor_types=[("a", "Q9_X")])


def test_non_finite_matrix_is_refused(f32: Path, matrix, tmp_path: Path) -> None:
    bad = matrix.means()
    bad["blk.0.attn_q.weight"] = bad["blk.0.attn_q.weight"].copy()
    bad["blk.0.attn_q.weight"][3] = np.nan
    with pytest.raises(QuantizationError, match="NaN"):
        quantize_gguf(f32, tmp_path / "n.gguf", get_quant("Q4_K_M").file_type, 1, imatrix=bad)
    assert not (tmp_path / "n.gguf").exists()


def test_q8_0_blocks_dequantize_to_the_intended_values() -> None:
    """Layout check for the one block type edgellm writes itself (the others come from llama.cpp's quantizer):
    gguf-py's dequantizer reads our bytes back as f16(d) * q, with d = max|x| / 127 and q = round(x / d) in
    float32 (llama.cpp's quantize_row_q8_0_ref)."""
    import gguf

    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (8, 128)).astype(np.float32)
    x[0, :32] = 0.0                                           # an all-zero block: d = 0, codes 0
    x[1, 32:64] *= 1e-3                                       # a tiny block (f16 scale precision)
    raw = quantize_q8_0(x)
    got = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q8_0).reshape(x.shape)
    blocks = x.reshape(-1, 32)
    d = np.abs(blocks).max(1, keepdims=True) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    q = np.rint(blocks * inv)
    assert np.abs(q).max() <= 127
    np.testing.assert_array_equal(got.reshape(-1, 32), d.astype(np.float16).astype(np.float32) * q)
    assert np.abs(got - x).max() <= float(d.max()) * 0.51


@pytest.mark.slow
def test_imatrix_lowers_q4_k_m_kld_on_real_smollm2(tmp_path: Path) -> None:
    """Real SmolLM2-135M: Q4_K_M quantized by llama.cpp with edgellm's importance matrix is closer to the F16
    model than without, on our prose and on a licence text (neither is in the calibration mix)."""
    from edgellm.evaluation import evaluate, reference_scores
    from tests.fixtures.smollm2 import smollm2_gguf, smollm2_hf_dir
    from tests.fixtures.texts import PROSE

    f16 = smollm2_gguf("F16")
    matrix = compute_imatrix(smollm2_hf_dir(), tokens=1024, seq_len=512)
    q = get_quant("Q4_K_M").file_type
    quantize_gguf(f16, tmp_path / "plain.gguf", q, 2)
    rep = quantize_gguf(f16, tmp_path / "imx.gguf", q, 2, imatrix=matrix.means())
    assert rep.imatrix_entries == len(matrix.names) == 211 and not rep.imatrix_missing
    licence = Path("/usr/share/common-licenses/GPL-3")
    texts = [PROSE] + ([licence.read_text(encoding="utf-8")] if licence.is_file() else [])
    for text in texts:
        ref = reference_scores(f16, text=text, max_tokens=256, n_ctx=256, threads=2)
        plain = evaluate(tmp_path / "plain.gguf", ref, threads=2).kld_mean
        imx = evaluate(tmp_path / "imx.gguf", ref, threads=2).kld_mean
        print(f"\nSmolLM2 Q4_K_M KLD vs F16 ({ref.tokens.__len__()} tokens): {plain:.4f} without, {imx:.4f} with "
              "the importance matrix")
        assert plain is not None and imx is not None and imx < 0.95 * plain


@pytest.mark.parametrize("ggml_type", ["Q4_K", "Q6_K"])
def test_k_quant_blocks_pack_as_ggml_and_grid_values_are_restored(f32: Path, tmp_path: Path, ggml_type: str) -> None:
    """Layout check for the K-quant blocks edgellm re-encodes: unpack/pack round-trips llama.cpp's own blocks
    byte for byte and the unpacked fields give gguf-py's dequantized values; a super-block whose values left
    the grid its source lies on (another scale or min picked) is re-encoded to the exact source values, and
    ordinary float weights are never touched."""
    import gguf

    from edgellm.converters.gguf_types import (pack_q4_k, pack_q6_k, restore_grid_blocks, unpack_q4_k,
                                               unpack_q6_k)

    quantize_gguf(f32, tmp_path / "k.gguf", get_quant("Q4_K_M").file_type, 1, tensor_types=[("", ggml_type)])
    t = next(t for t in gguf.GGUFReader(tmp_path / "k.gguf").tensors if t.name == "blk.0.ffn_gate.weight")
    assert t.tensor_type.name == ggml_type
    blocks = np.asarray(t.data).reshape(-1, 144 if ggml_type == "Q4_K" else 210).copy()
    values = gguf.quants.dequantize(blocks, t.tensor_type).reshape(-1, 256)
    if ggml_type == "Q4_K":
        d, dmin, sc, mn, q = unpack_q4_k(blocks)
        assert np.array_equal(pack_q4_k(d, dmin, sc, mn, q), blocks)
        mine = (np.repeat(d.astype(np.float32)[:, None] * sc, 32, 1) * q
                - np.repeat(dmin.astype(np.float32)[:, None] * mn, 32, 1))
        mn2 = mn.copy()
        mn2[3, 5] = (mn2[3, 5] + 1) % 64                     # another min in one sub-block: values move
        moved = pack_q4_k(d, dmin, sc, mn2, q)
    else:
        d, sc, q = unpack_q6_k(blocks)
        assert np.array_equal(pack_q6_k(d, sc, q), blocks)
        mine = np.repeat(d.astype(np.float32)[:, None] * sc, 16, 1) * q
        sc2 = sc.copy()
        sc2[3, 5] = sc2[3, 5] - 1 if sc2[3, 5] > -120 else sc2[3, 5] + 1
        moved = pack_q6_k(d, sc2, q)
    np.testing.assert_array_equal(mine, values)
    assert not np.array_equal(gguf.quants.dequantize(moved, t.tensor_type).reshape(-1, 256), values)
    fixed, n = restore_grid_blocks(ggml_type, values, moved)
    assert n == 1
    np.testing.assert_array_equal(gguf.quants.dequantize(fixed, t.tensor_type).reshape(-1, 256), values)
    rng = np.random.default_rng(0)
    off_grid = values + rng.normal(0, 1e-3, values.shape).astype(np.float32)
    same, n = restore_grid_blocks(ggml_type, off_grid, blocks)
    assert n == 0 and np.array_equal(same, blocks)


def test_requantizing_an_unpacked_k_quant_keeps_its_exact_values(f32: Path, tmp_path: Path) -> None:
    """GGUF Q4_K -> gguf_to_hf (F32) -> GGUF F32 -> Q4_K again: every super-block holds the original values
    (llama.cpp's own search re-lands on another grid in some; edgellm re-encodes exactly those)."""
    import gguf

    from edgellm.converters.gguf_to_hf import gguf_to_hf

    ftype = get_quant("Q4_K_S").file_type
    quantize_gguf(f32, tmp_path / "orig.gguf", ftype, 1, pure=True)
    folder = gguf_to_hf(tmp_path / "orig.gguf", tmp_path / "hf", dtype="F32")
    grid = convert_to_gguf(folder, tmp_path / "grid", "F32").path
    plain = quantize_gguf(grid, tmp_path / "plain.gguf", ftype, 1, pure=True, restore_grid=False)
    kept = quantize_gguf(grid, tmp_path / "kept.gguf", ftype, 1, pure=True)
    assert plain.grid_blocks == 0

    def values(path: Path) -> dict[str, np.ndarray]:
        return {t.name: gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(-1, 256)
                for t in gguf.GGUFReader(path).tensors if t.tensor_type.name == "Q4_K"}

    orig, before, after = values(tmp_path / "orig.gguf"), values(tmp_path / "plain.gguf"), values(tmp_path / "kept.gguf")
    assert set(orig) == set(after) and len(orig) >= 14
    moved = sum(int((before[n] != orig[n]).any(axis=1).sum()) for n in orig)
    assert kept.grid_blocks == moved
    for n in orig:
        np.testing.assert_array_equal(after[n], orig[n], err_msg=n)
    print(f"\nrequantized Q4_K: {moved} super-blocks re-encoded to the source grid")


@pytest.mark.parametrize("quant", ["Q4_0", "Q5_0", "IQ4_NL", "IQ3_XXS", "Q4_K_M"])
def test_quant_plan_predicts_the_types_llama_cpp_picks_with_an_importance_matrix(quant: str, tmp_path: Path) -> None:
    """Some llama.cpp rules depend on whether the quantizer has an importance matrix (Q4_0/Q5_0's first n/8
    ffn_down -> Q4_1/Q5_1, IQ3_XXS's attn_v and ffn_down, IQ4_NL's first ffn_down): 8 layers so n/8 = 1."""
    from collections import Counter

    from edgellm.converters.quant_plan import gguf_layout

    folder = make_tiny_model(tmp_path / "m8", layers=8, hidden=256, heads=4, kv_heads=2, ffn=512)
    f32 = convert_to_gguf(folder, tmp_path / "f32", "F32").path
    means = {t.name: np.ones(t.shape[0], np.float32)
             for t in gguf_layout(folder).types("F32") if len(t.shape) == 2}
    dst = tmp_path / "q.gguf"
    quantize_gguf(f32, dst, get_quant(quant).file_type, 2, imatrix=means)
    import gguf

    got = {t.name: t.tensor_type.name for t in gguf.GGUFReader(dst).tensors}
    want = {t.name: t.type for t in gguf_layout(folder).types(quant, imatrix=True)}
    assert got == want
    if quant in ("Q4_0", "Q5_0"):
        assert Counter(got.values())["Q4_1" if quant == "Q4_0" else "Q5_1"] == 1   # blk.0.ffn_down
