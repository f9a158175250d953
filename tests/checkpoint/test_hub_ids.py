"""A hub id is a checkpoint like a local directory once it is in the local Hugging Face cache: the header checks, the
raw config.json and the KV-scale check run on its snapshot (a missing tensor or config field refused, also through
SGLang's real launch_server); a hub id that is not cached is named as such."""

import json
import os
import shutil

import pytest

from sglang_glm5.attention.kv_policy import find_kv_scales
from sglang_glm5.checkpoint.locate import CheckpointNotCached, checkpoint_dir
from sglang_glm5.checkpoint.schema import INDEX_FILE
from sglang_glm5.checkpoint.validate import CheckpointError, validate_checkpoint
from sglang_glm5.config import Glm5Config, Glm5ConfigError
from sglang_glm5.serving.process import ServerProcess, ServerStartError
from tests.checkpoint.hf_cache import COMMIT, place_in_hf_cache
from tests.checkpoint.test_bad_checkpoints import DROPPED_FIELD, RESHAPED, config_without_indexer_field, rewrite_shard
from tests.started_together import servers_started_together

REPO_ID = "tiny-org/GLM-5-tiny"
DROPPED = RESHAPED


def missing_tensor(checkpoint):
    shard = rewrite_shard(checkpoint, DROPPED, lambda t: t.pop(DROPPED))
    index = json.loads((checkpoint / INDEX_FILE).read_text())
    del index["weight_map"][DROPPED]
    (checkpoint / INDEX_FILE).write_text(json.dumps(index))
    return [f"missing tensor '{DROPPED}'"]


BREAKAGES = {"missing-tensor": missing_tensor, "missing-config-field": config_without_indexer_field}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def cached(tiny_checkpoint, tmp_path, cache, breakage=None, dtype="bf16"):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint(dtype), checkpoint)
    expected = breakage(checkpoint) if breakage else []
    return place_in_hf_cache(checkpoint, cache, REPO_ID), expected


def test_a_cached_hub_id_is_its_snapshot(tiny_checkpoint, tmp_path, hub_cache):
    snapshot, _ = cached(tiny_checkpoint, tmp_path, hub_cache)
    assert checkpoint_dir(REPO_ID) == snapshot
    assert checkpoint_dir(REPO_ID, revision=COMMIT) == snapshot


def test_hf_home_is_followed(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    snapshot, _ = cached(tiny_checkpoint, tmp_path, tmp_path / "hf-home" / "hub")
    assert checkpoint_dir(REPO_ID) == snapshot


@pytest.mark.parametrize("offline", ["1", ""], ids=["offline", "online"])
def test_a_hub_id_not_cached_says_so(hub_cache, monkeypatch, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    with pytest.raises(CheckpointNotCached) as err:
        checkpoint_dir("zai-org/GLM-5-FP8")
    message = str(err.value)
    assert f"is not in the local Hugging Face cache {hub_cache}" in message and "hf download zai-org/GLM-5-FP8" in message
    assert ("HF_HUB_OFFLINE=1" in message) == bool(offline)
    scales = find_kv_scales("zai-org/GLM-5-FP8")
    assert scales.calibrated is None and "not in the local Hugging Face cache" in scales.where


def test_neither_a_directory_nor_a_hub_id(tmp_path):
    with pytest.raises(CheckpointNotCached, match="no such directory, and not a hub id"):
        checkpoint_dir(tmp_path / "absent" / "dir")


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_validator_refuses_a_broken_cached_hub_id(name, tiny_checkpoint, tmp_path, hub_cache):
    cached(tiny_checkpoint, tmp_path, hub_cache, BREAKAGES[name])
    with pytest.raises((CheckpointError, Glm5ConfigError)) as err:
        model_dir = checkpoint_dir(REPO_ID)
        validate_checkpoint(model_dir, Glm5Config.from_pretrained(model_dir))
    assert (DROPPED if name == "missing-tensor" else f"missing field '{DROPPED_FIELD}'") in str(err.value)


def test_kv_scales_of_a_cached_hub_id_are_read(tiny_checkpoint, tmp_path, hub_cache):
    snapshot, _ = cached(tiny_checkpoint, tmp_path, hub_cache, dtype="fp8")
    scales = find_kv_scales(REPO_ID)
    assert scales.calibrated is False and str(snapshot) in scales.where


@pytest.fixture(scope="module")
def hub_refusals(tiny_checkpoint, tmp_path_factory, server_log_dir):
    """name -> (launch_server on REPO_ID from an offline HF cache holding that broken checkpoint, fragments its error
    must name); all started at once (tests/started_together.py)."""
    servers, expected = {}, {}
    for name, breakage in BREAKAGES.items():
        root = tmp_path_factory.mktemp(f"hub-{name}")
        (cache := root / "hf-cache").mkdir()
        _, expected[name] = cached(tiny_checkpoint, root, cache, breakage)
        env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
        servers[name] = ServerProcess(REPO_ID, server_log_dir / f"hub-{name}.log", env=env)
    with servers_started_together(servers):
        yield {name: (servers[name], expected[name]) for name in servers}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BREAKAGES))
def test_launch_server_refuses_a_broken_cached_hub_id(name, hub_refusals):
    """Before, a hub id skipped the header checks and read config.json with transformers' defaults filled in."""
    server, expected = hub_refusals[name]
    with pytest.raises(ServerStartError) as err:
        server.wait_ready()
    for fragment in expected:
        assert fragment in str(err.value)
