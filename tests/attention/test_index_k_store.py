"""The index-K stores: FP8 keys in SGLang's real DSATokenToKVPool (byte-identical to SGLang's own writer, read by
FlashInfer's reader of the layout, reference and Triton indexers == the math by hand on the same bytes, carried by
move_kv_cache, poisoning the pool changes what is read), the model-dtype store, and the store decision."""

import dataclasses

import pytest
import torch

from sglang_glm5.dsa.impls import DSA_IMPLS
from sglang_glm5.attention.index_k_policy import (
    STORE_ENV,
    IndexKPolicyError,
    choose_index_k_store,
    refuse_unverified_pool_features,
)
from sglang_glm5.attention.index_k_store import IndexKStoreError, ModelDtypeIndexKStore, hadamard_matrix
from tests.attention.pool_cases import pool_case_facts

HAND_ATOL = 1e-5  # fp32 sums in another order
FP8_LOGIT_TOL = 0.06  # FP8 keys + queries vs the unquantized indexer, relative to the largest logit (measured 0.039)


@pytest.fixture(scope="module")
def facts():
    return pool_case_facts("tests.attention.pool_index_k_cases")


def test_sglang_pool_allocates_pages_only_for_indexer_layers(facts):
    assert facts["layer_buffers_rows"][1] == 0 and facts["layer_buffers_rows"][0] == facts["layer_buffers_rows"][2] > 0
    assert "layers [1]" in facts["skip_layer_refused"]


def test_bytes_are_sglangs_own_writers(facts):
    assert facts["bytes_written"] > 0
    assert facts["bytes_equal_sglang_writer"]
    assert facts["flashinfer_reads_keys"] and facts["flashinfer_reads_scales"]


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_indexer_on_pool_bytes_equals_hand_math(facts, impl):
    assert facts["keys_are_a_view_of_the_pool"]
    assert facts[f"{impl}_vs_hand_inf_same"]
    assert facts[f"{impl}_vs_hand_max_abs"] <= HAND_ATOL


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_flashmla_reads_the_pool_pages_as_the_reference_reads_the_store(facts, phase):
    figures = facts["flashmla_vs_reference_max_abs"][phase]
    assert figures["inf_same"]
    assert figures["max_abs"] <= 1e-4 * max(1.0, figures["scale"])  # flashmla's own tolerance vs the reference


def test_graph_read_allocates_nothing_and_equals_eager(facts):
    """Under CUDA graphs: key rows translated once into a static buffer, the read allocates nothing (the scale table
    is the store's own), and the graph-safe FP8 indexer (dsa_static) on a wider page table == the eager one."""
    g = facts["graph"]
    assert g["translate_allocations"] == [] and g["read_allocations"] == []
    assert g["key_rows_equal"] and g["past_width_masked"] and g["inf_same"]
    assert g["max_abs"] <= HAND_ATOL


def test_pool_is_what_is_read(facts):
    assert facts["poisoned_pool_changes_logits"]
    assert facts["moved_slots"] > 0 and facts["move_kv_cache_keeps_logits"]


def test_fp8_keys_stay_close_to_the_unquantized_indexer(facts):
    assert facts["fp8_vs_exact_max_abs_over_max"] <= FP8_LOGIT_TOL
    assert facts["fp8_topk16_overlap_mean"] >= 0.95


@pytest.mark.parametrize(
    "case", ["all-F-bf16-pool", "indexcache-bf16-pool", "indexcache-eagle-fp8-pool", "all-F-bf16-model"]
)
def test_planner_counts_what_the_pools_allocate(facts, case):
    figures = facts["plan"][case]
    assert figures["planned_per_token"] == figures["allocated_per_slot"]
    assert figures["indexer_layers"] < 79 if "indexcache" in case else figures["indexer_layers"] == 78


def test_hadamard_is_orthonormal():
    h = hadamard_matrix(128)
    torch.testing.assert_close(h @ h.T, torch.eye(128), atol=1e-6, rtol=0)
    with pytest.raises(IndexKStoreError, match="power of two"):
        hadamard_matrix(96)


def test_model_dtype_store_holds_only_indexer_layers():
    store = ModelDtypeIndexKStore([3, 0], slots=9, index_head_dim=4, dtype=torch.bfloat16, device="cpu")
    assert store.layers == (0, 3) and store.private_bytes() == 2 * 9 * 4 * 2
    k = torch.randn(2, 4)
    store.write(3, torch.tensor([5, 1]), k)
    keys = store.read(3, torch.tensor([[1, 5]]))
    assert torch.equal(keys.keys[[5, 1]], k.to(torch.bfloat16))
    with pytest.raises(IndexKStoreError, match="layer 1"):
        store.write(1, torch.tensor([0]), k[:1])


def impls(*names):
    return tuple(DSA_IMPLS[n].load(n, "prefill") for n in names)


@pytest.mark.parametrize(
    "device,names,env,store",
    [
        ("cpu", ("reference",), {}, "model"),
        ("cuda", ("triton",), {}, "pool-fp8"),
        ("cuda", ("triton", "reference"), {}, "pool-fp8"),
        ("cpu", ("reference",), {STORE_ENV: "pool-fp8"}, "pool-fp8"),
        ("cuda", ("triton",), {STORE_ENV: "model"}, "model"),
        ("hip", ("reference",), {}, "model"),
        ("cuda", ("flashmla",), {}, "pool-fp8"),
    ],
    ids=["cpu-default", "gpu-default", "gpu-mixed", "cpu-asked-pool", "gpu-asked-model", "amd-default", "flashmla-pages"],
)
def test_store_choice(device, names, env, store):
    assert choose_index_k_store(device, impls(*names), env).store == store


def test_store_choice_refuses_unknown_and_missing_fp8():
    with pytest.raises(IndexKPolicyError, match=f"{STORE_ENV}=paged"):
        choose_index_k_store("cpu", impls("reference"), {STORE_ENV: "paged"})
    no_fp8 = (dataclasses.replace(impls("reference")[0], name="x", indexer_logits_fp8=None),)
    assert choose_index_k_store("cuda", no_fp8, {}).store == "model"
    with pytest.raises(IndexKPolicyError, match="x has no FP8 indexer"):
        choose_index_k_store("cuda", no_fp8, {STORE_ENV: "pool-fp8"})



@pytest.mark.parametrize(
    "mode,hicache,flag",
    [("prefill", False, "--disaggregation-mode prefill"), ("decode", False, "--disaggregation-mode decode"),
     ("null", True, "--enable-hierarchical-cache")],
    ids=["pd-prefill", "pd-decode", "hicache"],
)  # fmt: skip
def test_pd_and_hicache_refused_naming_the_flag(mode, hicache, flag):
    with pytest.raises(IndexKPolicyError, match=f"^{flag}: not verified"):
        refuse_unverified_pool_features(mode, hicache)
    refuse_unverified_pool_features("null", False)
    refuse_unverified_pool_features(None, False)


@pytest.mark.parametrize(
    "fields,flag",
    [({"disaggregation_mode": "decode"}, "--disaggregation-mode decode"), ({"hierarchical_cache": True},
     "--enable-hierarchical-cache")],
    ids=["pd-decode", "hicache"],
)  # fmt: skip
def test_startup_check_refuses_pd_and_hicache_before_anything_else(tmp_path, fields, flag):
    from sglang_glm5.serving.startup_check import StartupRequest, decide

    request = StartupRequest(str(tmp_path), "cpu", None, {"prefill": None, "decode": None}, 8, False, **fields)
    with pytest.raises(IndexKPolicyError, match=f"^{flag}: not verified"):
        decide(request)
