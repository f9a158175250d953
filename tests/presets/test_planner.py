"""The planner's figures against numbers computed here by hand from GLM-5's dimensions (the public GLM-5-FP8 config.json), per component."""

import math

import pytest

from sglang_glm5.cli import main
from sglang_glm5.presets.catalog import load_catalog
from sglang_glm5.presets.compose import Refusal
from sglang_glm5.presets.planner import largest_context, plan
from tests.presets.combos import preset_feature_combinations

CATALOG = load_catalog()
MIB = 2**20
CONTEXT = 131072

# GLM-5 (the public GLM-5-FP8 config.json, written out here as an independent check of configs/glm5-config.json)
H, V, LAYERS, DENSE, I_DENSE = 6144, 154880, 78, 3, 12288
E, I_MOE, HEADS = 256, 2048, 64
Q_LORA, KV_LORA, NOPE, ROPE, V_HEAD = 2048, 512, 192, 64, 256
IDX_HEADS, IDX_DIM = 32, 128
BLOCK = 128
MOE_LAYERS = LAYERS - DENSE


def scales(out_dim, in_dim):
    return math.ceil(out_dim / BLOCK) * math.ceil(in_dim / BLOCK) * 4


def matrices(*shapes, fp8):
    """(weight bytes, scale bytes) of some (out, in) matrices: FP8 = 1 B + a 4 B scale per 128x128 block, else BF16."""
    return sum(o * i * (1 if fp8 else 2) for o, i in shapes), sum(scales(o, i) for o, i in shapes) if fp8 else 0


def attention_layer_bytes(fp8: bool, split_by_heads_ways: int) -> float:
    split_by_heads = matrices((HEADS * (NOPE + ROPE), Q_LORA), (HEADS * (NOPE + V_HEAD), KV_LORA), (H, HEADS * V_HEAD), fp8=fp8)
    replicated = matrices((Q_LORA, H), (KV_LORA + ROPE, H), (IDX_HEADS * IDX_DIM, Q_LORA), (IDX_DIM, H), fp8=fp8)
    weights_proj = IDX_HEADS * H * 2  # BF16 in both checkpoints
    norms = (2 * H + Q_LORA + KV_LORA + 2 * IDX_DIM) * 2
    return sum(split_by_heads) / split_by_heads_ways + sum(replicated) + weights_proj + norms


def moe_mlp_bytes(fp8: bool, tp: int) -> float:
    experts = matrices(*[(I_MOE, H), (I_MOE, H), (H, I_MOE)] * E, fp8=fp8)
    shared = matrices((I_MOE, H), (I_MOE, H), (H, I_MOE), fp8=fp8)
    router = (E * H + E) * 2
    return sum(experts) / tp + sum(shared) / tp + router


def per_gpu_weight_bytes(fp8: bool, tp: int) -> float:
    """No EAGLE (the MTP layer is not loaded), no DP attention, no expert parallelism."""
    dense = matrices((I_DENSE, H), (I_DENSE, H), (H, I_DENSE), fp8=fp8)
    embed_and_head = 2 * V * H * 2
    return (
        LAYERS * attention_layer_bytes(fp8, tp)
        + MOE_LAYERS * moe_mlp_bytes(fp8, tp)
        + DENSE * sum(dense) / tp
        + embed_and_head / tp
        + H * 2  # final norm
    )


def mtp_layer_bytes(fp8: bool, tp: int) -> float:
    """One MoE decoder layer + enorm, hnorm, shared_head.norm and the replicated eh_proj (H x 2H)."""
    return attention_layer_bytes(fp8, tp) + moe_mlp_bytes(fp8, tp) + 3 * H * 2 + sum(matrices((H, 2 * H), fp8=fp8))


KV_BF16_PER_LAYER = (KV_LORA + ROPE) * 2  # 1152
KV_FP8_PER_LAYER = KV_LORA + KV_LORA // BLOCK * 4 + ROPE * 2  # 656
INDEXER_KEY_PER_LAYER = IDX_DIM * 2  # 256: the model-dtype index-K store, bfloat16 (GLM-5's torch_dtype; AMD)
SGLANG_INDEX_K_PER_LAYER = IDX_DIM + IDX_DIM // BLOCK * 4  # 132: SGLang's DSA pool FP8 index-K
INDEXER_PER_LAYER = SGLANG_INDEX_K_PER_LAYER  # NVIDIA: the FP8 keys live in SGLang's pool, nothing beside it
AMD_INDEXER_PER_LAYER = INDEXER_KEY_PER_LAYER + SGLANG_INDEX_K_PER_LAYER  # 388: model-dtype store + SGLang's unread
INDEXCACHE_F_LAYERS = 40  # configs/features.json indexcache: the released GLM-5-FP8 pattern


@pytest.mark.parametrize(
    "preset,gpu_mib,tp,fp8,kv_per_layer,weights_gib",
    [
        ("h200-fp8", 143771, 8, True, KV_BF16_PER_LAYER, 88.69),
        ("h100-bf16", 81559, 32, False, KV_BF16_PER_LAYER, 47.10),
    ],
    ids=["h200-fp8", "h100-bf16"],
)
def test_figures_match_hand_computation(preset, gpu_mib, tp, fp8, kv_per_layer, weights_gib):
    p = plan(CATALOG, preset, context=CONTEXT)
    weights = per_gpu_weight_bytes(fp8, tp)
    assert p.tp == tp and p.gpu_bytes == gpu_mib * MIB
    assert p.weight_bytes == pytest.approx(weights, rel=1e-12)
    assert round(weights / 2**30, 2) == weights_gib
    kv_per_token = LAYERS * (kv_per_layer + INDEXER_PER_LAYER)
    assert p.kv_bytes_per_token == kv_per_token == 100152
    # indexer workspace: fp32 logits of 1 GiB // (4 B x 131072) = 2048 query rows, int32 top-k of the 8192-row chunk
    indexer_workspace = 2048 * CONTEXT * 4 + 8192 * 2048 * 4
    tokens = math.floor((gpu_mib * MIB * 0.85 - weights - indexer_workspace) / kv_per_token)
    assert p.kv_tokens == tokens
    assert p.max_concurrency == tokens // CONTEXT


def test_fp8_kv_cache_is_656_plus_132_bytes_per_token_per_layer():
    p = plan(CATALOG, "b200-fp8", context=CONTEXT)
    assert (KV_FP8_PER_LAYER, SGLANG_INDEX_K_PER_LAYER) == (656, 132)
    assert p.kv_cache_dtype == "fp8_e4m3" and p.kv_bytes_per_token == LAYERS * (656 + 132)  # upstream's figure


def test_amd_keeps_model_dtype_keys_beside_sglangs_unread_buffer():
    p = plan(CATALOG, "mi355x-bf16", context=CONTEXT)
    items = {i.label: i.bytes for i in p.kv_per_token}
    assert items[f"indexer keys bfloat16 x {LAYERS} layers"] == LAYERS * INDEXER_KEY_PER_LAYER
    assert items[f"SGLang FP8 index-K, unread x {LAYERS} layers"] == LAYERS * SGLANG_INDEX_K_PER_LAYER
    assert p.kv_bytes_per_token == LAYERS * (KV_BF16_PER_LAYER + AMD_INDEXER_PER_LAYER) == 120120


@pytest.mark.parametrize("features,indexer_layers", [((), LAYERS), (("indexcache",), INDEXCACHE_F_LAYERS),
                         (("indexcache", "eagle"), INDEXCACHE_F_LAYERS + 1)], ids=["all-F", "indexcache", "indexcache+eagle"])
def test_indexer_keys_only_for_the_layers_that_run_their_indexer(features, indexer_layers):
    p = plan(CATALOG, "h200-fp8", features, context=CONTEXT)
    items = {i.label: i.bytes for i in p.kv_per_token}
    assert items == {
        f"MLA KV bfloat16 x {LAYERS + ('eagle' in features)} layers": (LAYERS + ("eagle" in features)) * KV_BF16_PER_LAYER,
        f"indexer keys FP8 in pool x {indexer_layers} layers": indexer_layers * SGLANG_INDEX_K_PER_LAYER,
    }  # each buffer once
    mla_layers = LAYERS + ("eagle" in features)
    assert p.kv_bytes_per_token == mla_layers * KV_BF16_PER_LAYER + indexer_layers * INDEXER_PER_LAYER


def test_eagle_adds_the_mtp_layer_and_its_kv():
    base, eagle = plan(CATALOG, "h200-fp8", context=CONTEXT), plan(CATALOG, "h200-fp8", ["eagle"], context=CONTEXT)
    mtp = {i.label: i.bytes for i in eagle.weights}["MTP layer (EAGLE draft)"]
    assert mtp == pytest.approx(mtp_layer_bytes(True, 8), rel=1e-12)
    assert eagle.weight_bytes == pytest.approx(base.weight_bytes + mtp, rel=1e-12)
    assert eagle.kv_bytes_per_token == (LAYERS + 1) * (KV_BF16_PER_LAYER + INDEXER_PER_LAYER)


def test_dp_attention_replicates_the_attention_projections():
    base, dp = plan(CATALOG, "h200-fp8", context=CONTEXT), plan(CATALOG, "h200-fp8", ["dp-attention"], context=CONTEXT)
    replicated_heads = LAYERS * (attention_layer_bytes(True, 1) - attention_layer_bytes(True, 8))
    assert dp.weight_bytes - base.weight_bytes == pytest.approx(replicated_heads, rel=1e-9)
    assert dp.attention_dp == 8 and dp.max_concurrency == dp.kv_tokens // CONTEXT * 8


@pytest.mark.parametrize("tp,fits", [(8, False), (16, True)], ids=["tp8", "tp16"])
def test_h100_fp8(tp, fits):
    p = plan(CATALOG, "h100-fp8", tp=tp, context=CONTEXT)
    assert p.weights_fit is fits
    assert (per_gpu_weight_bytes(True, tp) < 81559 * MIB * 0.85) is fits


def test_plan_cli_says_h100_fp8_tp8_does_not_fit_and_tp16_does(capsys):
    assert main(["plan", "--preset", "h100-fp8", "--tp", "8"]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("DOES NOT FIT: weights need 88.69 GiB per GPU")
    assert main(["plan", "--preset", "h100-fp8", "--tp", "16", "--context", str(CONTEXT)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "FITS" and "use tp 16 instead" not in "".join(out)


def test_plan_cli_suggests_the_tp_that_fits(capsys):
    main(["plan", "--preset", "h100-fp8", "--tp", "8"])
    assert capsys.readouterr().out.rstrip().endswith(": use tp 16 instead")


def test_plan_cli_concurrency(capsys):
    assert main(["plan", "--preset", "h200-fp8", "--context", str(CONTEXT), "--concurrency", "64"]) == 1
    assert "DOES NOT FIT 64 requests of 131072 tokens" in capsys.readouterr().out


def test_cpu_tiny_has_nothing_to_plan():
    with pytest.raises(Refusal, match="^preset cpu-tiny has no GPU memory to plan: use b200-bf16 / .* instead$"):
        plan(CATALOG, "cpu-tiny")


def test_every_allowed_combination_fits_except_dp_attention_on_the_tightest():
    refused = []
    for param in preset_feature_combinations(CATALOG):
        name, features = param.values
        if name != "cpu-tiny" and not plan(CATALOG, name, features).weights_fit:
            refused.append(param.id)
    # DP attention replicates the attention projections: 21.9 GiB more per GPU in BF16
    assert refused == ["h100-bf16+dp-attention", "h100-bf16+eagle+dp-attention", "mi300x-bf16+dp-attention"]


@pytest.mark.parametrize("preset", ["h200-fp8", "h100-fp8"])
def test_largest_context_is_the_boundary_of_fitting_one_request(preset):
    longest = largest_context(CATALOG, plan(CATALOG, preset))
    assert 0 < longest <= CATALOG.model.max_position_embeddings
    at = plan(CATALOG, preset, context=longest)
    assert at.kv_tokens >= longest and at.indexer_fits
    if longest < CATALOG.model.max_position_embeddings:
        beyond = plan(CATALOG, preset, context=longest + 1)
        assert beyond.kv_tokens < longest + 1 or not beyond.indexer_fits


def test_plan_cli_says_nodes_and_the_largest_context(capsys):
    assert main(["plan", "--preset", "h100-fp8", "--context", "4096"]) == 0
    out = capsys.readouterr().out
    longest = largest_context(CATALOG, plan(CATALOG, "h100-fp8"))
    assert "nodes                                       2 (8 GPUs each)" in out
    assert f"largest context of one request              {longest} tokens" in out
