"""The FP8 MLA latent row in DeepSeek's 656 B layout, as SGLang 0.5.23's DSA pool stores it (plain torch).

One row per token (GLM-5: v_dim 512, rope 64): | 512 x e4m3 | 4 x fp32 scale | 64 x bf16 rope |.
SGLang allocates it (`calculate_mla_kv_cache_dim`: kv_lora_rank + kv_lora_rank // 128 * 4 + rope * 2) for DSA with
`--kv-cache-dtype fp8_e4m3` unless a `trtllm` phase or an all-TileLang / HIP pick wants the raw 576-byte layout,
and writes it with `quantize_k_cache_separate` (sglang/kernels/ops/quantization/dsa_quant_k_cache.py); FlashMLA's
sparse decode reads it as its "V32" layout. The scale is per tile of 128 latent values: scale = amax(|tile|) / 448,
code = e4m3(clamp(x * (1 / scale), -448, 448)); latent ~= code * scale. `quantize_latent` is that math (so the
bytes are SGLang's, tested against its Triton writer), except that an all-zero tile gets scale 1 and zero codes
where SGLang's writer divides by a zero amax and stores NaN codes.
"""

import torch

TILE = 128  # latent values per fp32 scale
E4M3_MAX = 448.0  # largest finite float8_e4m3fn
SCALE_BYTES = 4  # fp32
ROPE_BYTES = 2  # bf16


def fp8_latent_width(v_dim: int, rope_dim: int) -> int:
    """Bytes per token: 656 for GLM-5 (512 + 4 * 4 + 64 * 2)."""
    return v_dim + v_dim // TILE * SCALE_BYTES + rope_dim * ROPE_BYTES


def is_fp8_latent(kv_cache: torch.Tensor, qk_dim: int, v_dim: int) -> bool:
    """Whether a [S, W] pool holds packed FP8 rows (uint8, or float8_e4m3fn as SGLang types the buffer)."""
    return (
        kv_cache.dim() == 2
        and kv_cache.dtype in (torch.uint8, torch.float8_e4m3fn)
        and kv_cache.shape[1] == fp8_latent_width(v_dim, qk_dim - v_dim)
    )


def quantize_latent(nope: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """nope [N, v_dim], rope [N, rope_dim] (any float dtype) -> [N, 656] uint8 rows."""
    if nope.dim() != 2 or rope.dim() != 2 or nope.shape[0] != rope.shape[0]:
        raise ValueError(f"quantize_latent: nope [N, v_dim] and rope [N, rope_dim], got {tuple(nope.shape)} and {tuple(rope.shape)}")
    rows, v_dim = nope.shape
    if v_dim % TILE:
        raise ValueError(f"quantize_latent: v_dim {v_dim} is not a multiple of the {TILE}-value scale tile")
    tiles = nope.float().view(rows, v_dim // TILE, TILE)  # [N, 4, 128]
    amax = tiles.abs().amax(-1)  # [N, 4]
    scale = torch.where(amax > 0, amax / E4M3_MAX, 1.0)  # [N, 4] fp32
    # a multiply by the reciprocal, not a division: SGLang's writer does so, and the two round differently
    codes = (tiles * (1.0 / scale)[..., None]).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return torch.cat(
        [
            codes.view(torch.uint8).view(rows, v_dim),  # [N, 512]
            scale.view(torch.uint8),  # [N, 16]
            rope.to(torch.bfloat16).contiguous().view(torch.uint8),  # [N, 128]
        ],
        dim=1,
    )


def dequantize_latent(rows: torch.Tensor, v_dim: int, rope_dim: int) -> torch.Tensor:
    """[N, 656] uint8 (or float8_e4m3fn-typed) rows -> [N, v_dim + rope_dim] fp32: code * its tile's scale | rope."""
    rows = rows.view(torch.uint8) if rows.dtype == torch.float8_e4m3fn else rows
    if rows.dim() != 2 or rows.dtype != torch.uint8 or rows.shape[1] != fp8_latent_width(v_dim, rope_dim):
        raise ValueError(f"dequantize_latent: [N, {fp8_latent_width(v_dim, rope_dim)}] uint8 rows expected, got "
                         f"{rows.dtype} {tuple(rows.shape)}")  # fmt: skip
    count, tiles = rows.shape[0], v_dim // TILE
    codes = rows[:, :v_dim].contiguous().view(torch.float8_e4m3fn).float().view(count, tiles, TILE)
    scale = rows[:, v_dim : v_dim + tiles * SCALE_BYTES].contiguous().view(torch.float32)  # [N, 4]
    rope = rows[:, v_dim + tiles * SCALE_BYTES :].contiguous().view(torch.bfloat16).float()  # [N, rope_dim]
    return torch.cat([(codes * scale[..., None]).view(count, v_dim), rope], dim=1)
