"""bench/kv_capacity.py: before (model-dtype keys beside SGLang's unread FP8 buffer) and after (the store the
backend picks) from the same planner; NVIDIA drops the 256 B of private keys per indexer layer, AMD is unchanged."""

from bench import kv_capacity

LAYERS = 78
PRIVATE_KEYS_PER_LAYER = 128 * 2  # index_head_dim bf16


def test_nvidia_drops_the_private_keys_and_amd_keeps_them():
    rows = {r["preset"]: r for r in kv_capacity.run(["h200-fp8", "mi355x-bf16"], ())}
    h200, mi355x = rows["h200-fp8"], rows["mi355x-bf16"]
    assert h200["store"] == "pool-fp8" and h200["before_bytes"] - h200["after_bytes"] == LAYERS * PRIVATE_KEYS_PER_LAYER
    assert h200["after_tokens"] > h200["before_tokens"]
    assert mi355x["store"] == "model" and mi355x["after_bytes"] == mi355x["before_bytes"] == 120120
    assert h200["upstream_bytes"] == LAYERS * (656 + 132)


def test_markdown_has_the_table(tmp_path):
    payload = dict(command="cmd", date="d", commit="c", result=kv_capacity.run(["h200-fp8"], ("indexcache",)))
    text = kv_capacity.markdown(payload)
    assert "| h200-fp8 | bfloat16 | pool-fp8 |" in text


def test_fp8_latent_column_reaches_upstreams_bytes_on_nvidia():
    """With the 656 B FP8 latent and the keys in SGLang's pool, NVIDIA's bytes per token are upstream's exactly."""
    h200 = kv_capacity.run(["h200-fp8"], ())[0]
    assert h200["fp8_bytes"] == h200["upstream_bytes"] == LAYERS * (656 + 132)
    assert h200["fp8_tokens"] > h200["after_tokens"] > h200["before_tokens"]
