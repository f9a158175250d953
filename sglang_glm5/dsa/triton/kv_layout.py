"""FlashMLA's FP8 MLA KV cache layout, which the sparse MLA kernels read besides a plain float cache.

One row per token (656 B for GLM-5): the v_dim-d latent as e4m3 in tiles of 128 values, one fp32 scale per tile
(latent ~= e4m3 * scale), then the rope key in bf16: | 512 x e4m3 | 4 x fp32 | 64 x bf16 |.
pack/unpack are the layout's definition (host side, plain torch); the kernels' tests go through them.
"""

import torch

FP8_TILE = 128  # latent values per scale
FP8_MAX = 448.0  # largest finite float8_e4m3fn
SCALE_BYTES = 4  # fp32
ROPE_BYTES = 2  # bf16


def fp8_kv_width(v_dim: int, rope_dim: int) -> int:
    """Bytes per token: 656 for GLM-5 (512 + 4 * 4 + 64 * 2)."""
    return v_dim + (v_dim // FP8_TILE) * SCALE_BYTES + rope_dim * ROPE_BYTES


def fp8_kv_offsets(v_dim: int) -> tuple[int, int]:
    """Where a row's scales start, in fp32 elements, and its rope key, in bf16 elements."""
    scale_byte = v_dim
    rope_byte = v_dim + (v_dim // FP8_TILE) * SCALE_BYTES
    return scale_byte // SCALE_BYTES, rope_byte // ROPE_BYTES


def check_fp8_kv(name: str, packed: torch.Tensor, v_dim: int, rope_dim: int) -> None:
    if v_dim % FP8_TILE:
        raise ValueError(f"{name}: the FP8 layout quantizes the latent in tiles of {FP8_TILE}; v_dim {v_dim} is not a multiple")
    expected = fp8_kv_width(v_dim, rope_dim)
    if packed.dim() != 2 or packed.shape[1] != expected:
        raise ValueError(f"{name}: FP8 layout rows are {expected} bytes for v_dim {v_dim} + rope {rope_dim}, "
                         f"got shape {tuple(packed.shape)}")  # fmt: skip
    if packed.numel() and (packed.stride(1) != 1 or packed.stride(0) != expected):
        raise ValueError(f"{name}: FP8 layout rows must be contiguous and dense (strides {packed.stride()})")


def pack_fp8_kv(kv: torch.Tensor, v_dim: int) -> torch.Tensor:
    """kv [S, v_dim + rope_dim] float -> [S, fp8_kv_width] uint8; scale = amax(|tile|) / 448 (1 for a zero tile)."""
    slots, qk_dim = kv.shape
    latent = kv[:, :v_dim].float().view(slots, v_dim // FP8_TILE, FP8_TILE)  # [S, tiles, 128]
    amax = latent.abs().amax(-1)  # [S, tiles]
    scale = torch.where(amax > 0, amax / FP8_MAX, 1.0)
    codes = (latent / scale[..., None]).to(torch.float8_e4m3fn).view(torch.uint8).view(slots, v_dim)
    rope = kv[:, v_dim:].to(torch.bfloat16).contiguous().view(torch.uint8)  # [S, rope_dim * 2]
    packed = torch.cat([codes, scale.contiguous().view(torch.uint8), rope], dim=1)
    assert packed.shape[1] == fp8_kv_width(v_dim, qk_dim - v_dim)
    return packed


def unpack_fp8_kv(packed: torch.Tensor, v_dim: int, rope_dim: int) -> torch.Tensor:
    """[S, fp8_kv_width] uint8 -> [S, v_dim + rope_dim] fp32: what a kernel computes with."""
    check_fp8_kv("packed", packed, v_dim, rope_dim)
    slots = packed.shape[0]
    tiles = v_dim // FP8_TILE
    codes = packed[:, :v_dim].contiguous().view(torch.float8_e4m3fn).float().view(slots, tiles, FP8_TILE)
    scale = packed[:, v_dim : v_dim + tiles * SCALE_BYTES].contiguous().view(torch.float32)  # [S, tiles]
    rope = packed[:, v_dim + tiles * SCALE_BYTES :].contiguous().view(torch.bfloat16).float()  # [S, rope_dim]
    return torch.cat([(codes * scale[..., None]).view(slots, v_dim), rope], dim=1)
