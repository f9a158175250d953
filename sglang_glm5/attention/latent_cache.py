"""The MLA latent cache in SGLang's own KV pool: how the backend writes a layer's new rows and what it hands sparse MLA.

Two layouts, both SGLang's (`MLATokenToKVPool` / `DSATokenToKVPool`, sized by its `calculate_mla_kv_cache_dim`):
- raw: [S, 576] in the KV dtype (the model dtype, BF16, or e4m3 at unit scale as SGLang keeps it for `trtllm`);
  written through the pool's `set_kv_buffer`, read as `[S, 576]`.
- FP8 656 B (`pool.dsa_kv_cache_store_fp8`: `--kv-cache-dtype fp8_e4m3` with any pick but `trtllm` or all-TileLang):
  per token | 512 x e4m3 | 4 x fp32 scale per 128 values | 64 x bf16 rope | (dsa/fp8_latent.py). Written by SGLang's
  own writer (`set_mla_kv_buffer`: its Triton quantizer) on CUDA with a bf16 latent, elsewhere by
  `ops.fp8_latent.quantize_latent` (the same bytes: tests/attention/test_fp8_latent.py); read as the pool's
  `[S, 656]` uint8 rows, which the reference / triton / flashmla implementations dequantize on read.
"""

import logging

import torch

from sglang_glm5.dsa.fp8_latent import quantize_latent

logger = logging.getLogger(__name__)


def is_fp8_latent_pool(pool) -> bool:
    return bool(getattr(pool, "dsa_kv_cache_store_fp8", False))


def log_latent_layout(pool) -> None:
    width = getattr(pool, "kv_cache_dim", None)
    if is_fp8_latent_pool(pool):
        logger.info("GLM-5 DSA latent cache: FP8, %d B per token per layer in SGLang's pool (e4m3 + a scale per 128 "
                    "values, bf16 rope)", width)  # fmt: skip
    else:
        logger.info("GLM-5 DSA latent cache: %s, %s values per token per layer in SGLang's pool", pool.dtype, width)


def write_latent(pool, layer, loc: torch.Tensor, k_nope: torch.Tensor, k_rope: torch.Tensor) -> None:
    """Store the new tokens' latent (k_nope [T, 512]) and rope key (k_rope [T, 64]) at pool slots `loc` [T]."""
    if not is_fp8_latent_pool(pool):
        latent = torch.cat([k_nope, k_rope], dim=-1)  # [T, 576]
        pool.set_kv_buffer(layer, loc, latent.unsqueeze(1), None)
        return
    if k_nope.is_cuda and k_nope.dtype == torch.bfloat16 and k_rope.dtype == torch.bfloat16:
        pool.set_mla_kv_buffer(layer, loc, k_nope, k_rope)  # SGLang's fused quantize + scatter
        return
    rows = quantize_latent(k_nope, k_rope)  # [T, 656] uint8
    pool.kv_buffer[layer.layer_id - pool.start_layer][loc.long(), 0] = rows


def read_latent(pool, layer_id: int, qk_dim: int) -> torch.Tensor:
    """The layer's whole latent pool: [S, 656] uint8 rows (FP8 layout) or [S, qk_dim] in the KV dtype."""
    buffer = pool.get_key_buffer(layer_id)  # [S, 1, W] (SGLang types the FP8 rows float8_e4m3fn)
    if is_fp8_latent_pool(pool):
        return buffer.view(torch.uint8).view(buffer.shape[0], -1)  # [S, 656]
    return buffer.view(-1, qk_dim)  # [S, 576]
