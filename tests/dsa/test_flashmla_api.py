"""API drift guard: our keyword arguments bound to the installed libraries' own signatures.

deep_gemm imports on this CPU machine; flash_mla does not (its CUDA extension needs libcuda), so its signatures are
read from the installed wrapper's source (flash_mla/flash_mla_interface.py, parsed, not executed). An upgrade that
renames a function or an argument we pass fails here, not at launch on a GPU.
"""

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest
import torch

from sglang_glm5.dsa.flashmla import REQUIRED_MODULES
from sglang_glm5.dsa.flashmla.indexer import mqa_logits_kwargs, paged_mqa_logits_kwargs
from sglang_glm5.dsa.flashmla.layout import BLOCK
from sglang_glm5.dsa.flashmla.mla import FLASHMLA_MODULE, KERNEL_BY_PHASE, decode_kwargs, prefill_kwargs
from sglang_glm5.dsa.impls import DSA_IMPLS
from tests.dsa.flashmla_cases import DECODE_CASES, fp8_latent_pool, mla_inputs
from tests.dsa.test_flashmla_indexer import _inputs as indexer_inputs
from tests.dsa.cases import SM_SCALE, V_DIM


def _installed(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in this environment (pip install sglang brings it)")


def _signature_from_source(path: Path, name: str) -> inspect.Signature:
    """The signature of top-level function `name` in `path`, from its def line (defaults stand in as None)."""
    tree = ast.parse(path.read_text())
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    assert node is not None, f"{path} defines no function {name}"
    args, kind = node.args, inspect.Parameter
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    params = [
        inspect.Parameter(a.arg, kind.POSITIONAL_OR_KEYWORD, default=None if i >= first_default else kind.empty)
        for i, a in enumerate(positional)
    ]
    if args.vararg:
        params.append(inspect.Parameter(args.vararg.arg, kind.VAR_POSITIONAL))
    params += [
        inspect.Parameter(a.arg, kind.KEYWORD_ONLY, default=kind.empty if d is None else None)
        for a, d in zip(args.kwonlyargs, args.kw_defaults)
    ]
    if args.kwarg:
        params.append(inspect.Parameter(args.kwarg.arg, kind.VAR_KEYWORD))
    return inspect.Signature(params)


def _flash_mla_signature(name):
    _installed(FLASHMLA_MODULE)
    package = Path(importlib.util.find_spec(FLASHMLA_MODULE).submodule_search_locations[0])
    exported = {alias.name for node in ast.parse((package / "__init__.py").read_text()).body
                if isinstance(node, ast.ImportFrom) for alias in node.names}  # fmt: skip
    assert name in exported, f"flash_mla no longer exports {name}"
    return _signature_from_source(package / "flash_mla_interface.py", name)


def test_flash_mla_sparse_prefill_accepts_what_we_pass():
    batch, q, kv_cache, topk, selected = mla_inputs(DECODE_CASES[0], 8)
    for pool in (kv_cache, fp8_latent_pool(kv_cache, selected)):
        kwargs, _ = prefill_kwargs(q, pool, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM)
        _flash_mla_signature(KERNEL_BY_PHASE["prefill"]).bind(**kwargs)


def test_flash_mla_sparse_decode_accepts_what_we_pass():
    batch, q, kv_cache, topk, selected = mla_inputs(DECODE_CASES[0], 8)
    pool = fp8_latent_pool(kv_cache, selected)
    kwargs, _ = decode_kwargs(q, pool, batch.page_table, batch.q_seq, topk, SM_SCALE, V_DIM, object())
    _flash_mla_signature(KERNEL_BY_PHASE["decode"]).bind(**kwargs)
    _flash_mla_signature("get_mla_metadata").bind()  # called with no arguments: the first decode call fills it


def test_flash_mla_import_here_fails_only_for_want_of_a_gpu_runtime():
    """Visible record of why the kernels are not run here: the wheel is present, its CUDA extension cannot load."""
    _installed(FLASHMLA_MODULE)
    try:
        importlib.import_module(FLASHMLA_MODULE)
    except OSError as error:  # no libcuda on a CPU machine
        assert "cuda" in str(error).lower()
    else:
        assert torch.cuda.is_available(), "flash_mla imported on a machine without CUDA"


def test_deep_gemm_indexer_accepts_what_we_pass():
    _installed("deep_gemm")
    deep_gemm = importlib.import_module("deep_gemm")
    case = DECODE_CASES[0]
    batch, q, weights, pool = indexer_inputs(case, 32)
    kwargs, _ = mqa_logits_kwargs(q, weights, pool, batch.page_table, batch.q_seq, batch.q_pos)
    inspect.signature(deep_gemm.fp8_mqa_logits).bind(**kwargs)
    paged = paged_mqa_logits_kwargs(q, weights, pool, batch.page_table, batch.q_seq, batch.q_pos, object())
    inspect.signature(deep_gemm.fp8_paged_mqa_logits).bind(**paged)
    # indexer.indexer_logits_decode calls these two positionally, as SGLang does
    inspect.signature(deep_gemm.get_paged_mqa_logits_metadata).bind(paged["context_lens"], BLOCK, 132)
    inspect.signature(deep_gemm.get_num_sms).bind()


def test_the_start_up_probe_imports_the_packages_the_calls_use():
    assert DSA_IMPLS["flashmla"].requires == REQUIRED_MODULES == (FLASHMLA_MODULE, "deep_gemm")
