import dataclasses
import json

import pytest

from sglang_glm5.checkpoint.tiny import tiny_config_dict
from sglang_glm5.checkpoint.tokenizer import build_tokenizer
from sglang_glm5.config import Fp8BlockQuant, Glm5Config, Glm5ConfigError

SOURCE = "tiny/config.json"

# GLM-5-FP8 config.json, architecture fields (the public release; configs/glm5-config.json is the same file).
GLM5_FP8 = {
    "architectures": ["GlmMoeDsaForCausalLM"],
    "model_type": "glm_moe_dsa",
    "vocab_size": 154880,
    "hidden_size": 6144,
    "intermediate_size": 12288,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 78,
    "num_attention_heads": 64,
    "num_key_value_heads": 64,
    "q_lora_rank": 2048,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 192,
    "qk_rope_head_dim": 64,
    "v_head_dim": 256,
    "n_routed_experts": 256,
    "num_experts_per_tok": 8,
    "n_shared_experts": 1,
    "n_group": 1,
    "topk_group": 1,
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "first_k_dense_replace": 3,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_theta": 1000000, "rope_type": "default"},
    "max_position_embeddings": 202752,
    "index_topk": 2048,
    "index_head_dim": 128,
    "index_n_heads": 32,
    "indexer_rope_interleave": True,
    "rope_interleave": True,
    "num_nextn_predict_layers": 1,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "eos_token_id": [154820, 154827, 154829],
    "quantization_config": {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": [128, 128],
    },
}
INDEXER_FIELDS = ["index_topk", "index_head_dim", "index_n_heads", "indexer_rope_interleave"]
REQUIRED_FIELDS = {
    "vocab_size": "embedding",
    "hidden_size": "model",
    "num_hidden_layers": "model",
    "num_attention_heads": "MLA attention",
    "q_lora_rank": "MLA attention",
    "kv_lora_rank": "MLA attention",
    "qk_nope_head_dim": "MLA attention",
    "qk_rope_head_dim": "MLA attention",
    "v_head_dim": "MLA attention",
    "intermediate_size": "dense MLP",
    "first_k_dense_replace": "dense MLP",
    "moe_intermediate_size": "MoE",
    "n_routed_experts": "MoE",
    "num_experts_per_tok": "MoE",
    "n_shared_experts": "MoE",
    "n_group": "MoE router",
    "topk_group": "MoE router",
    "norm_topk_prob": "MoE router",
    "routed_scaling_factor": "MoE router",
    "rms_norm_eps": "norms",
    "max_position_embeddings": "RoPE",
    **dict.fromkeys(INDEXER_FIELDS, "DSA indexer"),
}


@pytest.fixture(scope="module")
def tiny() -> dict:
    return tiny_config_dict(build_tokenizer(), num_layers=4, index_topk=16, dtype="bf16")


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def test_tiny_config_parses(tiny):
    cfg = Glm5Config.from_dict(tiny, source=SOURCE)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.index_topk, cfg.index_n_heads) == (128, 4, 16, 16)
    assert cfg.rope_theta == 1e6 and cfg.quant is None
    assert cfg.qk_head_dim == 48 and cfg.softmax_scale == pytest.approx(48**-0.5)
    assert cfg.mtp_layer_index == 4 and cfg.has_mtp
    assert [cfg.is_dense_layer(i) for i in range(5)] == [True, False, False, False, False]
    assert cfg.eos_token_ids == tuple(tiny["eos_token_id"])


def test_tiny_fp8_config_parses_quant():
    d = tiny_config_dict(build_tokenizer(), num_layers=4, index_topk=16, dtype="fp8")
    assert Glm5Config.from_dict(d, source=SOURCE).quant == Fp8BlockQuant(32, 32, "e4m3")


def test_glm5_fp8_release_config_parses():
    cfg = Glm5Config.from_dict(GLM5_FP8)
    assert cfg.quant == Fp8BlockQuant(block_n=128, block_k=128, fmt="e4m3") and cfg.quant.block == (128, 128)
    assert cfg.qk_head_dim == 256 and cfg.softmax_scale == 256**-0.5
    assert cfg.mtp_layer_index == 78 and cfg.num_layers_with_mtp == 79
    assert cfg.is_dense_layer(2) and not cfg.is_dense_layer(3) and not cfg.is_dense_layer(78)
    assert cfg.rope_theta == 1e6 and isinstance(cfg.rope_theta, float)


def test_config_is_frozen(tiny):
    cfg = Glm5Config.from_dict(tiny)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.index_topk = 1


@pytest.mark.parametrize("field", INDEXER_FIELDS)
def test_missing_indexer_field_names_file_and_field(tiny, field):
    with pytest.raises(Glm5ConfigError) as e:
        Glm5Config.from_dict(_without(tiny, field), source=SOURCE)
    assert str(e.value) == f"{SOURCE}: missing field '{field}' (DSA indexer)"


@pytest.mark.parametrize("field,group", REQUIRED_FIELDS.items(), ids=list(REQUIRED_FIELDS))
def test_missing_required_field(tiny, field, group):
    with pytest.raises(Glm5ConfigError, match=rf"^{SOURCE}: missing field '{field}' \({group}\)$"):
        Glm5Config.from_dict(_without(tiny, field), source=SOURCE)


def test_null_counts_as_missing(tiny):
    with pytest.raises(Glm5ConfigError, match="missing field 'q_lora_rank'"):
        Glm5Config.from_dict({**tiny, "q_lora_rank": None}, source=SOURCE)


@pytest.mark.parametrize(
    "patch,message",
    [
        pytest.param(
            {"num_attention_heads": 0},
            "field 'num_attention_heads' (MLA attention) must be >= 1, got 0",
            id="zero-heads",
        ),
        pytest.param(
            {"index_n_heads": -4}, "field 'index_n_heads' (DSA indexer) must be >= 1, got -4", id="negative-index-heads"
        ),
        pytest.param({"index_topk": 0}, "field 'index_topk' (DSA indexer) must be >= 1, got 0", id="zero-index-topk"),
        pytest.param(
            {"qk_rope_head_dim": 15}, "field 'qk_rope_head_dim' (RoPE) must be even, got 15", id="odd-rope-dim"
        ),
        pytest.param(
            {"index_head_dim": 8},
            "field 'index_head_dim' (8) must be >= qk_rope_head_dim (16)",
            id="index-dim-below-rope",
        ),
        pytest.param(
            {"first_k_dense_replace": 5},
            "field 'first_k_dense_replace' (5) must be <= num_hidden_layers (4)",
            id="too-many-dense",
        ),
        pytest.param(
            {"n_group": 3}, "field 'n_routed_experts' (8) must be divisible by n_group (3)", id="experts-not-divisible"
        ),
        pytest.param({"topk_group": 2}, "field 'topk_group' (2) must be <= n_group (1)", id="topk-group-over-groups"),
        pytest.param(
            {"num_experts_per_tok": 9}, "field 'num_experts_per_tok' (9) exceeds the experts", id="topk-over-experts"
        ),
        pytest.param(
            {"num_key_value_heads": 1},
            "field 'num_key_value_heads' (1) must equal num_attention_heads (4)",
            id="gqa-heads",
        ),
        pytest.param({"hidden_size": "128"}, "field 'hidden_size' (model) must be int, got '128'", id="string-int"),
        pytest.param({"hidden_size": 128.0}, "field 'hidden_size' (model) must be int, got 128.0", id="float-int"),
        pytest.param({"index_topk": True}, "field 'index_topk' (DSA indexer) must be int, got True", id="bool-int"),
        pytest.param(
            {"indexer_rope_interleave": 1},
            "field 'indexer_rope_interleave' (DSA indexer) must be bool, got 1",
            id="int-bool",
        ),
        pytest.param({"rms_norm_eps": 0.0}, "field 'rms_norm_eps' (norms) must be > 0, got 0.0", id="zero-eps"),
        pytest.param(
            {"routed_scaling_factor": float("nan")},
            "field 'routed_scaling_factor' (MoE router) must be float",
            id="nan",
        ),
        pytest.param(
            {"hidden_act": "gelu"}, "field 'hidden_act' must be one of ('silu',), got 'gelu'", id="activation"
        ),
        pytest.param(
            {"scoring_func": "softmax"}, "field 'scoring_func' must be one of ('sigmoid',)", id="softmax-router"
        ),
        pytest.param(
            {"eos_token_id": "x"}, "field 'eos_token_id' (generation) must be an id or a list of ids", id="eos"
        ),
    ],
)
def test_bad_value_is_named(tiny, patch, message):
    with pytest.raises(Glm5ConfigError) as e:
        Glm5Config.from_dict({**tiny, **patch}, source=SOURCE)
    assert str(e.value).startswith(f"{SOURCE}: {message}")


def test_rope_theta_top_level_or_nested(tiny):
    flat = {**_without(tiny, "rope_parameters"), "rope_theta": 10000}
    assert Glm5Config.from_dict(flat).rope_theta == 10000.0
    both = {**tiny, "rope_theta": 1e6}
    assert Glm5Config.from_dict(both).rope_theta == 1e6


@pytest.mark.parametrize(
    "patch,message",
    [
        pytest.param({"rope_parameters": {}}, "missing field 'rope_theta' (RoPE", id="missing"),
        pytest.param(
            {"rope_theta": 5.0},
            "field 'rope_theta' (RoPE) is 5.0 but rope_parameters.rope_theta is 1000000.0",
            id="conflict",
        ),
        pytest.param(
            {"rope_parameters": {"rope_theta": 1e6, "rope_type": "yarn"}}, "only rope_type 'default'", id="yarn"
        ),
        pytest.param({"rope_scaling": {"type": "linear", "factor": 2}}, "only rope_type 'default'", id="scaling"),
        pytest.param({"rope_parameters": {"rope_theta": -1}}, "field 'rope_theta' (RoPE) must be > 0", id="negative"),
    ],
)
def test_bad_rope(tiny, patch, message):
    with pytest.raises(Glm5ConfigError) as e:
        Glm5Config.from_dict({**tiny, **patch}, source=SOURCE)
    assert str(e.value).startswith(f"{SOURCE}: ") and message in str(e.value)


def test_optional_fields_default_to_glm5(tiny):
    d = {k: v for k, v in tiny.items() if k not in ("rope_interleave", "tie_word_embeddings", "hidden_act")}
    cfg = Glm5Config.from_dict(d)
    assert cfg.rope_interleave is True and cfg.tie_word_embeddings is False and cfg.hidden_act == "silu"
    assert Glm5Config.from_dict(_without(tiny, "num_nextn_predict_layers")).has_mtp is False


@pytest.mark.parametrize(
    "qc,message",
    [
        pytest.param({"quant_method": "awq"}, "quant_method 'awq' is not supported", id="method"),
        pytest.param({**GLM5_FP8["quantization_config"], "fmt": "e5m2"}, "fmt 'e5m2' is not supported", id="fmt"),
        pytest.param(
            {**GLM5_FP8["quantization_config"], "activation_scheme": "static"},
            "activation_scheme 'static'",
            id="static",
        ),
        pytest.param({"quant_method": "fp8"}, "weight_block_size must be two positive ints, got None", id="no-block"),
        pytest.param(
            {"quant_method": "fp8", "weight_block_size": [128]},
            "weight_block_size must be two positive ints",
            id="short",
        ),
        pytest.param(
            {"quant_method": "fp8", "weight_block_size": [128, 0]},
            "weight_block_size must be two positive ints",
            id="zero",
        ),
    ],
)
def test_bad_quantization_config(qc, message):
    with pytest.raises(Glm5ConfigError) as e:
        Glm5Config.from_dict({**GLM5_FP8, "quantization_config": qc}, source="glm5/config.json")
    assert str(e.value).startswith("glm5/config.json: field 'quantization_config'") and message in str(e.value)


def test_overrides_apply_and_are_validated(tiny):
    cfg = Glm5Config.from_dict(tiny, overrides={"index_topk": 4, "rope_theta": 500.0})
    assert cfg.index_topk == 4 and cfg.rope_theta == 500.0
    with pytest.raises(Glm5ConfigError, match=rf"^{SOURCE}: field 'index_topk' \(DSA indexer\) must be >= 1, got 0$"):
        Glm5Config.from_dict(tiny, source=SOURCE, overrides={"index_topk": 0})
    with pytest.raises(Glm5ConfigError, match=r"unknown override field\(s\) \['index_topk_patern'\]"):
        Glm5Config.from_dict(tiny, source=SOURCE, overrides={"index_topk_patern": "FS"})


def test_from_pretrained(tmp_path, tiny):
    (tmp_path / "config.json").write_text(json.dumps(tiny))
    assert Glm5Config.from_pretrained(tmp_path) == Glm5Config.from_dict(tiny)
    assert Glm5Config.from_pretrained(tmp_path, overrides={"index_topk": 8}).index_topk == 8
    (tmp_path / "config.json").write_text(json.dumps(_without(tiny, "index_head_dim")))
    with pytest.raises(
        Glm5ConfigError, match=rf"^{tmp_path}/config.json: missing field 'index_head_dim' \(DSA indexer\)$"
    ):
        Glm5Config.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "content,message",
    [
        pytest.param(None, "no such file", id="missing"),
        pytest.param("{", "invalid JSON", id="bad-json"),
        pytest.param("[]", "expected a JSON object", id="not-object"),
    ],
)
def test_from_pretrained_bad_file(tmp_path, content, message):
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(Glm5ConfigError, match=f"^{tmp_path}/config.json: {message}"):
        Glm5Config.from_pretrained(tmp_path)


def test_is_dense_layer_range(tiny):
    cfg = Glm5Config.from_dict(tiny)
    with pytest.raises(ValueError, match="layer 5 out of range: 4 decoder layers \\+ 1 MTP"):
        cfg.is_dense_layer(5)
