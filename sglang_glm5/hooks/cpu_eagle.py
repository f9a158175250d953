"""CPU fixes for SGLang 0.5.23's EAGLE worker (speculative decoding with GLM-5's MTP draft).

Two gaps, both in EAGLE's bookkeeping (never in the model's math):
- SGLang launches small Triton kernels for it (verify commit, draft-extend inputs, chain trees, ...) on every
  device; Triton has no CPU driver. On CPU those kernels of SGLang's speculative modules run in Triton's own
  interpreter (`InterpretedFunction`), so their semantics stay SGLang's.
- Where SGLang has a CPU branch it calls `*_cpu` ops that exist only in the AMX build of sgl-kernel (our
  stand-in raises). Each is replaced through SGLang's HookRegistry: the slot copies and bonus-token gathers by a
  few lines of torch, tree building and greedy verification by SGLang's own Triton versions (interpreted).
SGLang also picks a Triton `get_last_loc` unless the backend is `torch_native`; on CPU its torch version runs.
"""

import importlib

import torch
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction


def last_loc_in_torch(original, req_to_token, req_pool_indices_tensor, prefix_lens_tensor):
    from sglang.srt.mem_cache.allocation import get_last_loc_torch

    return get_last_loc_torch(req_to_token, req_pool_indices_tensor, prefix_lens_tensor)


def assign_req_to_token_pool(req_pool_indices, req_to_token, start_offset, end_offset, out_cache_loc, pool_len):
    """req_to_token[req_b, start_b:end_b] = the next end_b - start_b slots of out_cache_loc, request by request."""
    offset = 0
    for req, start, end in zip(req_pool_indices.tolist(), start_offset.tolist(), end_offset.tolist()):
        req_to_token[req, start:end] = out_cache_loc[offset : offset + end - start].to(req_to_token.dtype)
        offset += end - start


def assign_extend_cache_locs(req_pool_indices, req_to_token, start_offset, end_offset, out_cache_loc, pool_len):
    """The inverse copy: out_cache_loc (flat, request by request) = req_to_token[req_b, start_b:end_b]."""
    offset = 0
    for req, start, end in zip(req_pool_indices.tolist(), start_offset.tolist(), end_offset.tolist()):
        out_cache_loc[offset : offset + end - start] = req_to_token[req, start:end].to(out_cache_loc.dtype)
        offset += end - start


def assign_draft_cache_locs_contiguous(req_pool_indices, req_to_token, seq_lens, out_cache_loc, pool_len, topk, cols):
    """out_cache_loc[b * topk * cols : (b + 1) * topk * cols] = req_to_token[req_b, seq_len_b : + topk * cols]."""
    width = topk * cols
    for b, (req, start) in enumerate(zip(req_pool_indices.tolist(), seq_lens.tolist())):
        out_cache_loc[b * width : (b + 1) * width] = req_to_token[req, start : start + width].to(out_cache_loc.dtype)


def fill_bonus_tokens(accept_tokens, accept_lens, bonus_tokens, accept_stride):
    """bonus_tokens[b] = the last accepted token of request b (accept_lens counts the bonus token)."""
    last = accept_stride * torch.arange(accept_lens.numel()) + accept_lens.long().cpu() - 1  # [B]
    bonus_tokens.copy_(accept_tokens.reshape(-1)[last].to(bonus_tokens.dtype))


def fill_accept_out_cache_loc(accept_index, out_cache_loc, accept_out_cache_loc):
    """The slots of the accepted draft tokens, packed in order (-1 entries of accept_index skipped)."""
    flat = accept_index.reshape(-1)
    kept = flat[flat != -1].long()
    accept_out_cache_loc[: kept.numel()] = out_cache_loc[kept].to(accept_out_cache_loc.dtype)


def build_tree(*args):
    from sglang.kernels.ops.speculative.spec_tree import sgl_build_tree_kernel_triton

    sgl_build_tree_kernel_triton(*args)


def verify_tree_greedy(
    predicts, accept_index, accept_token_num, candidates, retrive_index, retrive_next_token, retrive_next_sibling,
    target_predict,
):
    from sglang.kernels.ops.speculative.spec_tree import verify_tree_greedy_triton

    verify_tree_greedy_triton(
        predicts, accept_index, accept_token_num, candidates, retrive_index, retrive_next_token,
        retrive_next_sibling, target_predict,
    )


def interpret_triton_kernels(module_name: str) -> list[str]:
    """Every @triton.jit kernel of the module, swapped for Triton's interpreter of the same function."""
    module = importlib.import_module(module_name)
    kernels = [name for name, obj in vars(module).items() if isinstance(obj, JITFunction)]
    for name in kernels:
        setattr(module, name, InterpretedFunction(getattr(module, name).fn))
    return kernels

