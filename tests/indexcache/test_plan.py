"""The IndexCache plan: precedence of its sources, transformers' schedule, validation messages naming the position."""

import pytest
from transformers import GlmMoeDsaConfig

from sglang_glm5.indexcache.plan import IndexCachePlanError, IndexerPlan, resolve_plan

COOKBOOK = "FFSFSSSFSSFFFSSSFFFSFSSSSSSFFSFFSFFSSFFFFFFSFFFFFSFFSSSSSSFSFFFSFSSSFSFFSFFSSS"
GLM5_LAYERS = 78


def test_cookbook_pattern_summary():
    plan = resolve_plan({}, {"index_topk_pattern": COOKBOOK}, GLM5_LAYERS)
    assert (plan.num_full, plan.num_shared) == (40, 38)
    assert plan.summary().startswith("IndexCache: 40 F / 38 S, indexer FLOPs -49%")
    assert plan.runs_indexer(GLM5_LAYERS), "the MTP layer always runs its own indexer"
    assert [plan.source_layer(i) for i in range(4)] == [0, 1, 1, 3]


@pytest.mark.parametrize(
    "freq,offset,layers",
    [(1, 2, 6), (2, 2, 7), (3, 1, 9), (4, 3, 11), (2, 5, 5)],
    ids=lambda v: str(v),
)
def test_schedule_matches_transformers(freq, offset, layers):
    hf = GlmMoeDsaConfig(num_hidden_layers=layers, index_topk_freq=freq, index_skip_topk_offset=offset)
    plan = resolve_plan({"index_topk_freq": freq, "index_skip_topk_offset": offset}, {}, layers)
    assert plan.indexer_types == hf.indexer_types


def test_pattern_matches_transformers():
    hf = GlmMoeDsaConfig(num_hidden_layers=GLM5_LAYERS, index_topk_pattern=COOKBOOK)
    assert resolve_plan({"index_topk_pattern": COOKBOOK}, {}, GLM5_LAYERS).indexer_types == hf.indexer_types


@pytest.mark.parametrize(
    "config,overrides,expected,source",
    [
        ({}, {}, "FFFF", "default"),
        ({"indexer_types": ["full", "shared", "full", "shared"]}, {}, "FSFS", "config.json indexer_types"),
        ({"index_topk_pattern": "FFSS", "indexer_types": ["full"] * 4}, {}, None, None),
        ({"indexer_types": ["full"] * 4}, {"index_topk_pattern": "FSSF"}, "FSSF", "--json-model-override-args"),
        ({"index_topk_pattern": "FSSF"}, {"index_topk_freq": 2}, "FFSF", "index_topk_freq=2"),
        ({"index_topk_freq": 2, "index_skip_topk_offset": 1}, {}, "FSFS", "index_topk_freq=2"),
        ({"index_topk_pattern": "FSFS", "index_topk_freq": 2, "index_skip_topk_offset": 1}, {}, "FSFS", "pattern"),
    ],
    ids=["none", "types", "pattern-vs-types", "override-wins", "override-schedule", "schedule", "agreeing"],
)
def test_precedence(config, overrides, expected, source):
    if expected is None:
        with pytest.raises(IndexCachePlanError, match="conflicts with indexer_types at position 2"):
            resolve_plan(config, overrides, 4)
        return
    plan = resolve_plan(config, overrides, 4)
    assert plan.pattern == expected
    assert source in plan.source


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"index_topk_pattern": COOKBOOK}, "has 78 characters but the model has 4 decoder layers"),
        ({"index_topk_pattern": "FFSFS"}, "has 5 characters"),
        ({"index_topk_pattern": "FF-F"}, "position 2 is '-'"),
        ({"index_topk_pattern": "ffsf"}, "position 0 is 'f'"),
        ({"index_topk_pattern": "SFFF"}, "position 0 is 'S'"),
        ({"index_topk_pattern": 7}, "must be a string of F/S"),
        ({"index_topk_pattern": "FSSF", "index_topk_freq": 2}, "conflicts with index_topk_freq=2 / index_skip_topk_offset=2 at position 1"),
        ({"index_topk_pattern": "FSSF", "index_skip_topk_offset": 1}, "conflicts with index_topk_freq=1 / index_skip_topk_offset=1 at position 1"),
        ({"index_topk_freq": 0}, "index_topk_freq must be an int >= 1, got 0"),
        ({"index_topk_freq": 2, "index_skip_topk_offset": 0}, "index_skip_topk_offset must be an int >= 1"),
        ({"indexer_types": ["full", "sparse", "full", "full"]}, "indexer_types position 1 is 'sparse'"),
        ({"indexer_types": ["shared", "full", "full", "full"]}, "position 0 is 'S'"),
    ],
    ids=["cookbook-on-4-layers", "length-5", "dash", "lowercase", "first-S", "not-a-string", "conflict-freq",
         "conflict-offset", "freq-0", "offset-0", "bad-type", "types-first-shared"],
)
def test_malformed_names_the_position(overrides, message):
    with pytest.raises(IndexCachePlanError) as err:
        resolve_plan({}, overrides, 4)
    assert message in str(err.value)
    assert str(err.value).startswith("--json-model-override-args")


def test_plan_object_validates_itself():
    with pytest.raises(IndexCachePlanError, match="position 0 is 'S'"):
        IndexerPlan("SF", "test")


def test_config_object_with_sglang_override_applied(tiny_checkpoint):
    """No local config.json: the plan comes from the HF config object SGLang already updated with the overrides."""
    from transformers import AutoConfig

    from sglang_glm5.config import Glm5Config, Glm5ConfigError

    overrides = {"index_topk_pattern": "FSSF"}
    hf = AutoConfig.from_pretrained(tiny_checkpoint("bf16"))
    hf.update(overrides)  # what SGLang does with --json-model-override-args; indexer_types stays all "full"
    assert Glm5Config.from_dict(hf.to_dict(), overrides=overrides).indexer_plan.pattern == "FSSF"
    with pytest.raises(Glm5ConfigError, match="conflicts with indexer_types at position 1"):
        Glm5Config.from_dict(hf.to_dict())  # one source holding both: refused, never silently all-F
