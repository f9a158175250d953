"""The MTP draft's checkpoint names: SGLang-side renaming, and the trainer's export back to GLM-5 names."""

import pytest
import torch
from safetensors.torch import load_file

from sglang_glm5.checkpoint.tiny import SHARD_GLOB, write_tiny_checkpoint
from sglang_glm5.checkpoint.train import MTPHead, _load_mtp, _read_checkpoint, trained_tensors
from sglang_glm5.models.weights import mtp_weights

NUM_LAYERS = 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-mtp"), dtype="bf16", num_layers=NUM_LAYERS)


@pytest.fixture(scope="module")
def stored(checkpoint) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(checkpoint.glob(SHARD_GLOB)):
        out.update(load_file(shard))
    return out


@pytest.mark.parametrize(
    "ckpt_name, draft_name",
    [
        (f"model.layers.{NUM_LAYERS}.enorm.weight", "model.enorm.weight"),
        (f"model.layers.{NUM_LAYERS}.hnorm.weight", "model.hnorm.weight"),
        (f"model.layers.{NUM_LAYERS}.eh_proj.weight", "model.eh_proj.weight"),
        (f"model.layers.{NUM_LAYERS}.shared_head.norm.weight", "model.shared_head.norm.weight"),
        (f"model.layers.{NUM_LAYERS}.self_attn.indexer.wk.weight", "model.decoder.self_attn.indexer.wk.weight"),
        (f"model.layers.{NUM_LAYERS}.mlp.experts.3.up_proj.weight", "model.decoder.mlp.experts.3.up_proj.weight"),
    ],
    ids=["enorm", "hnorm", "eh_proj", "shared_head-norm", "indexer-wk", "expert3-up"],
)
def test_mtp_weights_renames(stored, ckpt_name, draft_name):
    renamed = dict(mtp_weights(stored.items(), NUM_LAYERS))
    assert torch.equal(renamed[draft_name], stored[ckpt_name])


def test_mtp_weights_keeps_only_the_mtp_layer(stored):
    renamed = dict(mtp_weights(stored.items(), NUM_LAYERS))
    expected = sum(name.startswith(f"model.layers.{NUM_LAYERS}.") for name in stored)
    assert len(renamed) == expected > 0
    assert all(name.startswith(("model.decoder.", "model.enorm", "model.hnorm", "model.eh_proj", "model.shared_head"))
               for name in renamed)


def test_trainer_export_is_the_checkpoint(checkpoint, stored):
    """Untrained: HF model + MTP head exported under GLM-5 names equal every stored tensor, names and values."""
    from transformers import GlmMoeDsaForCausalLM

    model = GlmMoeDsaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    mtp = MTPHead(model.config)
    _load_mtp(mtp, _read_checkpoint(checkpoint), NUM_LAYERS)
    exported = trained_tensors(model, mtp, NUM_LAYERS)
    missing = sorted(set(stored) - set(exported))
    assert not missing, f"checkpoint tensors the trainer does not export: {missing[:5]}"
    for name, tensor in stored.items():
        assert torch.equal(exported[name].to(tensor.dtype), tensor), name
