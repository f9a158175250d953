"""FP8 block-quantized checkpoints on CPU: SGLang's FP8 GEMMs need a GPU, so weights are dequantized as they stream in.

The model is then built unquantized (`quant_config=None`); on GPU the FP8 params load as they are.
"""

from functools import partial
from typing import Iterable, Iterator

import torch

from sglang_glm5.quant.fp8_block import dequantize_fp8_blocks

SCALE_SUFFIX = "_scale_inv"  # GLM-5-FP8 / DeepSeek: `<module>.weight_scale_inv` beside `<module>.weight`


class Fp8CheckpointError(ValueError):
    pass


def dequantize_stream(
    weights: Iterable[tuple[str, torch.Tensor]], block: tuple[int, int], dtype: torch.dtype, locate=lambda n: "checkpoint"
) -> Iterator[tuple[str, torch.Tensor]]:
    pending_weights: dict[str, torch.Tensor] = {}
    pending_scales: dict[str, torch.Tensor] = {}
    for name, tensor in weights:
        if name.endswith(SCALE_SUFFIX):
            weight_name = name.removesuffix(SCALE_SUFFIX)
            if weight_name in pending_weights:
                yield weight_name, dequantize_fp8_blocks(pending_weights.pop(weight_name), tensor, block, dtype)
            else:
                pending_scales[weight_name] = tensor
        elif tensor.dtype == torch.float8_e4m3fn:
            if name in pending_scales:
                yield name, dequantize_fp8_blocks(tensor, pending_scales.pop(name), block, dtype)
            else:
                pending_weights[name] = tensor
        else:
            yield name, tensor
    for name in pending_weights:
        raise Fp8CheckpointError(f"{locate(name)}: FP8 weight '{name}' has no '{name}{SCALE_SUFFIX}'")
    for name in pending_scales:
        raise Fp8CheckpointError(f"{locate(name + SCALE_SUFFIX)}: '{name}{SCALE_SUFFIX}' has no FP8 weight '{name}'")


def plan_weight_format(quant_config, checkpoint_quant):
    """Transform of the checkpoint's (name, tensor) stream: FP8 blocks are dequantized when SGLang built no FP8
    layers for an FP8 checkpoint (on CPU, see `hooks.cpu`); otherwise tensors pass through unchanged."""
    if checkpoint_quant is None or quant_config is not None:
        return lambda weights, locate: weights
    return partial(dequantize_stream, block=checkpoint_quant.block, dtype=torch.get_default_dtype())
