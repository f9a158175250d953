import math

import pytest
import torch

from sglang_glm5.quant import FP8_DTYPE, FP8_MAX, dequantize_fp8_blocks, quantize_fp8_blocks, scale_grid_shape

E4M3_MANTISSA_BITS = 3
E4M3_MIN_NORMAL_EXP = -6
# Round-to-nearest: half a unit in the last place, relative for normals, absolute for subnormals.
REL_ROUNDING = 2.0 ** -(E4M3_MANTISSA_BITS + 1)
SUBNORMAL_ROUNDING = 2.0 ** (E4M3_MIN_NORMAL_EXP - E4M3_MANTISSA_BITS - 1)
FP32_SLACK = 1e-6

SHAPES = [
    pytest.param((64, 64), (32, 32), id="aligned-64x64-b32"),
    pytest.param((80, 128), (32, 32), id="ragged-rows-80x128-b32"),
    pytest.param((64, 100), (32, 32), id="ragged-cols-64x100-b32"),
    pytest.param((33, 47), (32, 32), id="ragged-both-33x47-b32"),
    pytest.param((576, 256), (128, 128), id="glm5-kv_a-576x256-b128"),
    pytest.param((1, 1), (128, 128), id="single-element"),
    pytest.param((40, 24), (16, 8), id="nonsquare-block-16x8"),
]


def _weight(shape, seed=0, scale=0.05):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def _blocks(shape, block):
    n, k = shape
    bn, bk = block
    for i in range(math.ceil(n / bn)):
        for j in range(math.ceil(k / bk)):
            yield i, j, (slice(i * bn, (i + 1) * bn), slice(j * bk, (j + 1) * bk))


@pytest.mark.parametrize("shape,block", SHAPES)
def test_quantize_shapes_and_dtypes(shape, block):
    w_fp8, scale_inv = quantize_fp8_blocks(_weight(shape), block)
    assert w_fp8.dtype == FP8_DTYPE and tuple(w_fp8.shape) == shape
    assert scale_inv.dtype == torch.float32
    assert tuple(scale_inv.shape) == (math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1]))
    assert tuple(scale_inv.shape) == scale_grid_shape(shape, block)


@pytest.mark.parametrize("shape,block", SHAPES)
def test_scale_is_block_amax_over_448(shape, block):
    w = _weight(shape)
    w_fp8, scale_inv = quantize_fp8_blocks(w, block)
    for i, j, sl in _blocks(shape, block):
        amax = w[sl].abs().max()
        torch.testing.assert_close(scale_inv[i, j], amax / FP8_MAX, rtol=1e-6, atol=0)
        # The block's largest element lands on the top of the e4m3 range.
        assert w_fp8[sl].float().abs().max() == FP8_MAX


@pytest.mark.parametrize("shape,block", SHAPES)
def test_round_trip_error_within_e4m3_rounding_per_block(shape, block):
    w = _weight(shape)
    w_fp8, scale_inv = quantize_fp8_blocks(w, block)
    back = dequantize_fp8_blocks(w_fp8, scale_inv, block, torch.float32)
    assert back.dtype == torch.float32 and back.shape == w.shape
    for i, j, sl in _blocks(shape, block):
        bound = torch.maximum(w[sl].abs() * REL_ROUNDING, torch.full_like(w[sl], SUBNORMAL_ROUNDING) * scale_inv[i, j])
        err = (back[sl] - w[sl]).abs()
        assert (
            err <= bound * (1 + FP32_SLACK) + FP32_SLACK * scale_inv[i, j]
        ).all(), f"block ({i}, {j}): max err {err.max()}"


def test_ragged_edge_block_gets_its_own_scale():
    w = _weight((80, 128))
    w[64:, :] *= 100  # the ragged last row-block (16 rows) is much larger than the rest
    w_fp8, scale_inv = quantize_fp8_blocks(w, (32, 32))
    assert (scale_inv[2] > 50 * scale_inv[1]).all()
    back = dequantize_fp8_blocks(w_fp8, scale_inv, (32, 32), torch.float32)
    assert ((back - w).abs() <= w.abs() * REL_ROUNDING * (1 + FP32_SLACK) + 1e-6).all()


def test_all_zero_block_round_trips_to_zero():
    w = _weight((64, 64))
    w[:32, :32] = 0
    w_fp8, scale_inv = quantize_fp8_blocks(w, (32, 32))
    assert torch.isfinite(scale_inv).all()
    back = dequantize_fp8_blocks(w_fp8, scale_inv, (32, 32), torch.float32)
    assert (back[:32, :32] == 0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_dequantize_output_dtype(dtype):
    w_fp8, scale_inv = quantize_fp8_blocks(_weight((48, 40)), (32, 32))
    assert dequantize_fp8_blocks(w_fp8, scale_inv, (32, 32), dtype).dtype == dtype


def test_bf16_input_quantizes_like_its_fp32_value():
    w = _weight((64, 64)).to(torch.bfloat16)
    a = quantize_fp8_blocks(w, (32, 32))
    b = quantize_fp8_blocks(w.float(), (32, 32))
    assert torch.equal(a[0].view(torch.uint8), b[0].view(torch.uint8)) and torch.equal(a[1], b[1])


def test_quantize_rejects_non_matrix():
    with pytest.raises(ValueError, match=r"w must be 2-D \[N, K\], got shape \(4, 4, 4\)"):
        quantize_fp8_blocks(torch.zeros(4, 4, 4), (32, 32))
    with pytest.raises(ValueError, match=r"got shape \(8,\)"):
        quantize_fp8_blocks(torch.zeros(8), (32, 32))


@pytest.mark.parametrize("block", [(0, 32), (32,), (32, -1), (32.0, 32)], ids=["zero", "one-dim", "negative", "float"])
def test_bad_block_is_named(block):
    with pytest.raises(ValueError, match="block must be two positive ints"):
        quantize_fp8_blocks(torch.zeros(4, 4), block)


def test_dequantize_rejects_mismatched_scale_grid():
    w_fp8, scale_inv = quantize_fp8_blocks(_weight((80, 128)), (32, 32))
    with pytest.raises(
        ValueError,
        match=r"scale_inv shape \(2, 4\) does not match weight \(80, 128\) with block \(32, 32\): expected \(3, 4\)",
    ):
        dequantize_fp8_blocks(w_fp8, scale_inv[:2], (32, 32))
    with pytest.raises(ValueError, match=r"expected \(1, 1\)"):
        dequantize_fp8_blocks(w_fp8, scale_inv, (128, 128))


def test_dequantize_rejects_non_matrix():
    with pytest.raises(ValueError, match=r"scale_inv must be 2-D \[N, K\], got shape \(3,\)"):
        dequantize_fp8_blocks(torch.zeros(80, 32).to(FP8_DTYPE), torch.ones(3), (32, 32))
