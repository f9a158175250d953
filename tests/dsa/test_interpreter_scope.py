"""The interpreter is confined to the kernel modules: the kernels are interpreted, the process env is untouched."""

import os

from triton.runtime.interpreter import InterpretedFunction

from sglang_glm5.dsa.triton import indexer, mla_decode, mla_prefill, topk


def test_kernels_run_in_the_interpreter():
    kernels = [indexer._indexer_logits_kernel, topk._topk_kernel, mla_prefill._sparse_mla_prefill_kernel,
               mla_decode._sparse_mla_split_kernel, mla_decode._merge_splits_kernel]  # fmt: skip
    assert all(isinstance(kernel, InterpretedFunction) for kernel in kernels)


def test_triton_interpret_not_left_in_the_environment(triton_interpret_before):
    # servers and subprocesses of other test modules inherit os.environ
    assert os.environ.get("TRITON_INTERPRET") == triton_interpret_before
