"""The FP8 MLA latent in SGLang's 656 B layout (dsa/fp8_latent.py, attention/latent_cache.py) on SGLang's real
DSATokenToKVPool: our writer's bytes against SGLang's own writer and e4m3 rounding done by hand, FlashMLA's documented
V32 dequantization of the pool, reference and Triton (interpreter) sparse MLA on the pool's bytes == the same math by
hand in float64 from the raw bits, and slots no top-k reaches never read."""


import pytest
import torch

from sglang_glm5.dsa.fp8_latent import dequantize_latent, fp8_latent_width, is_fp8_latent, quantize_latent
from tests.attention.pool_cases import pool_case_facts

HAND_RTOL = 1e-6  # fp32 sums in another order, relative to the largest output (|out| up to ~1e3 here)
E4M3_STEP = 1 / 16  # e4m3 has 3 mantissa bits: rounding to nearest moves a value by at most 2**-4 of itself


@pytest.fixture(scope="module")
def facts():
    return pool_case_facts("tests.attention.fp8_latent_cases")


def test_sglang_pool_rows_are_656_bytes(facts):
    assert facts["pool_row_bytes"] == [1, 656] == [1, fp8_latent_width(512, 64)]


def test_bytes_are_sglangs_writer_with_round_to_nearest_even(facts):
    assert facts["scales_equal_sglang_writer"] and facts["rope_equal_sglang_writer"]
    assert facts["codes_rne_by_hand"] and facts["unwritten_rows_untouched"]
    # SGLang's Triton writer in Triton's interpreter rounds a few percent of values another way; ours never farther
    assert facts["codes_equal_sglang_writer_fraction"] > 0.9 and facts["codes_differing_ours_not_farther"]


def test_pool_read_in_place_and_flashmla_v32_reads_the_same_values(facts):
    assert facts["read_is_the_pool"] and facts["read_shape"][1] == 656
    assert facts["flashmla_v32_vs_hand_max_abs"] <= 1e-6 * 30 * 1e2  # fp32 product vs float64, |latent| <= ~3e3
    assert facts["quantization_error_over_tile_amax"] <= E4M3_STEP and facts["rope_exact"]


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_sparse_mla_on_pool_bytes_equals_hand_math(facts, impl, phase):
    assert facts[f"{impl}_{phase}_vs_hand_max_abs"] <= HAND_RTOL * facts["hand_scale"]


def test_slots_no_topk_reaches_are_never_read(facts):
    assert facts["poisoned_unread_slots_max_abs"] <= HAND_RTOL * facts["hand_scale"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_quantize_round_trip_and_layout_checks(dtype):
    gen = torch.Generator().manual_seed(3)
    kv = (torch.randn(9, 576, generator=gen) * torch.rand(9, 1, generator=gen) * 50).to(dtype)
    kv[4, :128] = 0  # an all-zero tile: scale 1, zero codes (SGLang's writer would store NaN codes there)
    rows = quantize_latent(kv[:, :512], kv[:, 512:])
    assert rows.dtype == torch.uint8 and rows.shape == (9, 656) and is_fp8_latent(rows, 576, 512)
    assert is_fp8_latent(rows.view(torch.float8_e4m3fn), 576, 512) and not is_fp8_latent(kv, 576, 512)
    back = dequantize_latent(rows, 512, 64)
    tile_amax = kv[:, :512].float().abs().view(9, 4, 128).amax(-1).repeat_interleave(128, -1)
    assert ((back[:, :512] - kv[:, :512].float()).abs() <= E4M3_STEP * tile_amax).all()
    assert torch.equal(back[4, :128], torch.zeros(128))
    assert torch.equal(back[:, 512:], kv[:, 512:].to(torch.bfloat16).float())
    with pytest.raises(ValueError, match=r"\[N, 656\] uint8 rows expected"):
        dequantize_latent(rows[:, :576], 512, 64)
    with pytest.raises(ValueError, match="not a multiple of the 128-value scale tile"):
        quantize_latent(kv[:, :500], kv[:, 512:])
