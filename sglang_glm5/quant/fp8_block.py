from __future__ import annotations

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448


def _check_block(block: tuple[int, int]) -> tuple[int, int]:
    if len(block) != 2 or not all(isinstance(b, int) and b > 0 for b in block):
        raise ValueError(f"block must be two positive ints, got {block!r}")
    return block[0], block[1]


def _check_matrix(name: str, t: torch.Tensor) -> None:
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [N, K], got shape {tuple(t.shape)}")


def scale_grid_shape(shape: tuple[int, int], block: tuple[int, int]) -> tuple[int, int]:
    bn, bk = _check_block(block)
    n, k = shape
    return (-(-n // bn), -(-k // bk))


def _pad_to_blocks(w: torch.Tensor, bn: int, bk: int) -> torch.Tensor:
    n, k = w.shape
    gn, gk = scale_grid_shape((n, k), (bn, bk))
    return torch.nn.functional.pad(w, (0, gk * bk - k, 0, gn * bn - n))  # [gn*bn, gk*bk]


def quantize_fp8_blocks(w: torch.Tensor, block: tuple[int, int] = (128, 128)) -> tuple[torch.Tensor, torch.Tensor]:
    _check_matrix("w", w)
    bn, bk = _check_block(block)
    n, k = w.shape
    gn, gk = scale_grid_shape((n, k), (bn, bk))
    # Zero padding never raises a block's amax, so ragged edge blocks get their own true scale.
    blocks = _pad_to_blocks(w.float(), bn, bk).view(gn, bn, gk, bk)  # [gn, bn, gk, bk]
    amax = blocks.abs().amax(dim=(1, 3))  # [gn, gk]
    # An all-zero block quantizes to zeros with any scale; 1.0 keeps the division finite.
    scale_inv = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))  # [gn, gk]
    q = (blocks / scale_inv[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
    w_fp8 = q.view(gn * bn, gk * bk)[:n, :k].to(FP8_DTYPE).contiguous()  # [N, K]
    return w_fp8, scale_inv.contiguous()


def dequantize_fp8_blocks(
    w_fp8: torch.Tensor,
    scale_inv: torch.Tensor,
    block: tuple[int, int] = (128, 128),
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    _check_matrix("w_fp8", w_fp8)
    _check_matrix("scale_inv", scale_inv)
    bn, bk = _check_block(block)
    expected = scale_grid_shape(tuple(w_fp8.shape), (bn, bk))
    if tuple(scale_inv.shape) != expected:
        raise ValueError(
            f"scale_inv shape {tuple(scale_inv.shape)} does not match weight {tuple(w_fp8.shape)}"
            f" with block {(bn, bk)}: expected {expected}"
        )
    n, k = w_fp8.shape
    scale = scale_inv.float().repeat_interleave(bn, dim=0).repeat_interleave(bk, dim=1)[:n, :k]  # [N, K]
    return (w_fp8.float() * scale).to(dtype)
