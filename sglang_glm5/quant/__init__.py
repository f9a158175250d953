from sglang_glm5.quant.fp8_block import FP8_DTYPE, FP8_MAX, dequantize_fp8_blocks, quantize_fp8_blocks, scale_grid_shape

__all__ = ["FP8_DTYPE", "FP8_MAX", "dequantize_fp8_blocks", "quantize_fp8_blocks", "scale_grid_shape"]
