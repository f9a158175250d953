"""The planner's indexer-key bytes per token are the bytes per KV slot of the cache our backend allocates."""

import json

import pytest
import torch

from sglang_glm5.attention.backend import allocate_index_k_cache
from sglang_glm5.config import Glm5Config
from sglang_glm5.presets.files import configs_dir
from sglang_glm5.presets.layout import load_layout
from sglang_glm5.presets.planner import indexer_key_item

SLOTS = 37  # pool.size + page_size rows of an odd-sized pool


@pytest.mark.parametrize(
    "pattern,mtp,layers",
    [(None, False, [0, 1, 2, 3]), (None, True, [0, 1, 2, 3, 4]), ("FFSF", False, [0, 1, 3]), ("FSSS", True, [0, 4])],
    ids=["all-F", "all-F-eagle", "FFSF", "FSSS-eagle"],
)
def test_planned_indexer_key_bytes_are_the_allocated_cache(tiny_checkpoint, pattern, mtp, layers):
    path = tiny_checkpoint("bf16")
    cfg = Glm5Config.from_pretrained(path, overrides={"index_topk_pattern": pattern} if pattern else None)
    model_dtype = json.loads((path / "config.json").read_text())["torch_dtype"]  # SGLang's ModelConfig.dtype follows it
    rows, cache = allocate_index_k_cache(layers, SLOTS, cfg.index_head_dim, getattr(torch, model_dtype), "cpu")
    assert sorted(rows) == layers
    item = indexer_key_item(cfg, load_layout(configs_dir()), model_dtype, mtp)
    assert item.bytes == cache.nbytes / SLOTS
    assert item.label == f"indexer keys {model_dtype} x {len(layers)} layers"
