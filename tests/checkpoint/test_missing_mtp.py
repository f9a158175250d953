"""A checkpoint without its MTP layer (what HF transformers' save_pretrained writes): the target accepts it, EAGLE's
draft and the start-up check refuse it naming the missing tensors; a partial MTP layer is refused either way."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from sglang_glm5.checkpoint.schema import INDEX_FILE, mtp_tensor_specs
from sglang_glm5.checkpoint.validate import (
    CheckpointError,
    check_mtp_for_speculative,
    missing_mtp_tensors,
    read_headers,
    validate_checkpoint,
)
from sglang_glm5.config import Glm5Config


def without(src, dst, drop) -> Glm5Config:
    """A copy of `src` with the tensors `drop(name)` selects removed from shards and index."""
    shutil.copytree(src, dst)
    for shard in dst.glob("*.safetensors"):
        save_file({k: v for k, v in load_file(shard).items() if not drop(k)}, shard, metadata={"format": "pt"})
    index = json.loads((dst / INDEX_FILE).read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if not drop(k)}
    (dst / INDEX_FILE).write_text(json.dumps(index))
    return Glm5Config.from_pretrained(dst)


@pytest.fixture(scope="module")
def no_mtp(tiny_checkpoint, tmp_path_factory):
    src = tiny_checkpoint("bf16")
    cfg = Glm5Config.from_pretrained(src)
    prefix = f"model.layers.{cfg.mtp_layer_index}."
    dst = tmp_path_factory.mktemp("no-mtp") / "ckpt"
    return dst, without(src, dst, lambda name: name.startswith(prefix))


def test_target_accepts_a_checkpoint_without_mtp(no_mtp):
    path, cfg = no_mtp
    headers = validate_checkpoint(path, cfg, require_mtp=False)
    assert missing_mtp_tensors(headers, cfg) == tuple(spec.name for spec in mtp_tensor_specs(cfg))


def test_draft_refuses_it_naming_the_tensors(no_mtp):
    path, cfg = no_mtp
    with pytest.raises(CheckpointError) as err:
        validate_checkpoint(path, cfg, require_mtp=True)
    n = len(mtp_tensor_specs(cfg))
    assert f"misses {n} of {n} tensors" in str(err.value)
    assert f"'model.layers.{cfg.mtp_layer_index}.enorm.weight'" in str(err.value)


@pytest.mark.parametrize("algorithm", ["EAGLE", "NEXTN"])
def test_speculative_start_up_is_refused(no_mtp, algorithm):
    path, cfg = no_mtp
    with pytest.raises(CheckpointError) as err:
        check_mtp_for_speculative(algorithm, path, cfg)
    assert f"--speculative-algorithm {algorithm}" in str(err.value) and "serve without" in str(err.value)


def test_speculative_start_up_passes_with_the_mtp_layer(tiny_checkpoint):
    path = tiny_checkpoint("bf16")
    check_mtp_for_speculative("EAGLE", path, Glm5Config.from_pretrained(path))
    check_mtp_for_speculative(None, path, Glm5Config.from_pretrained(path))


def test_a_partial_mtp_layer_is_refused_by_the_target(tiny_checkpoint, tmp_path):
    src = tiny_checkpoint("bf16")
    cfg = Glm5Config.from_pretrained(src)
    gone = f"model.layers.{cfg.mtp_layer_index}.eh_proj.weight"
    cfg = without(src, tmp_path / "ckpt", lambda name: name == gone)
    assert gone not in read_headers(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=f"missing tensor '{gone}'"):
        validate_checkpoint(tmp_path / "ckpt", cfg, require_mtp=False)
