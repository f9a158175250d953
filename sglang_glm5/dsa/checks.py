"""Argument checks with named errors that the TileLang and Triton DSA kernel wrappers share.

rows_dense: the tensor's last dim must be dense (stride 1), for kernels that load whole rows as they are given
(Triton); kernels that copy their inputs dense first (TileLang) leave it False.
"""

import torch

INDEX_DTYPES = (torch.int32, torch.int64)


def check_tensor(name, x, ndim, dtypes, device=None, *, rows_dense=False):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device}, expected {device} (where q is)")
    if rows_dense and x.numel() and x.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dim (stride {x.stride(-1)}): kernels load rows")


def check_size(name, actual, expected, what):
    if actual != expected:
        raise ValueError(f"{name}: {what} is {actual}, expected {expected}")


def check_batch(page_table, q_seq, q_pos, num_tokens, device, *, rows_dense=False):
    """page_table [B, L] and q_seq [T] (and q_pos [T] unless None) as integer tensors on q's device.

    Without rows_dense, page_table rows may be strided (SGLang's req_to_token[:, :L] slice).
    """
    check_tensor("page_table", page_table, 2, INDEX_DTYPES, device, rows_dense=rows_dense)
    check_tensor("q_seq", q_seq, 1, INDEX_DTYPES, device, rows_dense=rows_dense)
    check_size("q_seq", q_seq.shape[0], num_tokens, "number of query tokens")
    if q_pos is not None:
        check_tensor("q_pos", q_pos, 1, INDEX_DTYPES, device, rows_dense=rows_dense)
        check_size("q_pos", q_pos.shape[0], num_tokens, "number of query tokens")


def check_out(out, shape, dtype, device, *, rows_dense=False):
    """A caller-provided output buffer must match exactly: kernels write it in place."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    check_tensor("out", out, len(shape), (dtype,), device, rows_dense=rows_dense)
    check_size("out", tuple(out.shape), tuple(shape), "shape")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous: kernels write it with the row strides of a dense tensor")
    return out


def fresh_buffer(name, shape, dtype, device):
    """A plan's default `empty` (sglang_glm5/dsa/graph_plan.py): a fresh tensor per call, `name` unused. Under
    CUDA graphs the graph state's GraphArena.empty takes its place: one buffer per named slot."""
    return torch.empty(shape, dtype=dtype, device=device)
