"""A broken checkpoint fails at load with an error naming the file and the tensor (or config field): checked on the
validator directly, then through SGLang's real launch_server, which must exit instead of serving."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from sglang_glm5.checkpoint.schema import INDEX_FILE, SCALE_SUFFIX
from sglang_glm5.checkpoint.validate import CheckpointError, validate_checkpoint
from sglang_glm5.config import Glm5Config, Glm5ConfigError
from sglang_glm5.serving.process import ServerProcess, ServerStartError
from tests.started_together import servers_started_together

RESHAPED = "model.layers.1.self_attn.kv_b_proj.weight"
UNSCALED = "model.layers.1.mlp.experts.3.down_proj.weight"
DROPPED_FIELD = "index_n_heads"
RESIZED_FIELD = "moe_intermediate_size"
FIRST_EXPERT = "model.layers.1.mlp.experts.0.gate_proj.weight"  # the first tensor RESIZED_FIELD shapes


def shard_of(checkpoint, tensor: str) -> str:
    return json.loads((checkpoint / INDEX_FILE).read_text())["weight_map"][tensor]


def rewrite_shard(checkpoint, tensor: str, edit) -> str:
    shard = shard_of(checkpoint, tensor)
    tensors = load_file(checkpoint / shard)
    edit(tensors)
    save_file(tensors, checkpoint / shard, metadata={"format": "pt"})
    return shard


def missing_shard(checkpoint):
    shard = shard_of(checkpoint, RESHAPED)
    (checkpoint / shard).unlink()
    return [shard, "missing shard"]


def wrong_shape(checkpoint):
    shard = rewrite_shard(checkpoint, RESHAPED, lambda t: t.update({RESHAPED: t[RESHAPED][:-1].contiguous()}))
    return [shard, RESHAPED, "shape"]


def fp8_without_scale(checkpoint):
    shard = rewrite_shard(checkpoint, UNSCALED, lambda t: t.pop(UNSCALED + SCALE_SUFFIX))
    index = json.loads((checkpoint / INDEX_FILE).read_text())
    del index["weight_map"][UNSCALED + SCALE_SUFFIX]
    (checkpoint / INDEX_FILE).write_text(json.dumps(index))
    return [shard, UNSCALED, SCALE_SUFFIX]


def config_without_indexer_field(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    del config[DROPPED_FIELD]
    (checkpoint / "config.json").write_text(json.dumps(config))
    return ["config.json", f"missing field '{DROPPED_FIELD}'"]


def config_not_matching_checkpoint(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config[RESIZED_FIELD] *= 2
    (checkpoint / "config.json").write_text(json.dumps(config))
    return [shard_of(checkpoint, FIRST_EXPERT), FIRST_EXPERT, "config.json implies"]


BREAKAGES = {
    "missing-shard": ("bf16", missing_shard),
    "wrong-shape": ("bf16", wrong_shape),
    "fp8-without-scale_inv": ("fp8", fp8_without_scale),
    "config-without-index_n_heads": ("bf16", config_without_indexer_field),
    "config-moe_intermediate_size-not-the-checkpoints": ("bf16", config_not_matching_checkpoint),
}


@pytest.fixture(scope="module")
def broken_checkpoints(tiny_checkpoint, tmp_path_factory):
    """name -> (checkpoint with that breakage, fragments its error must name); the tests only read them."""
    built = {}
    for name, (dtype, breakage) in BREAKAGES.items():
        checkpoint = tmp_path_factory.mktemp(f"broken-{name}")
        shutil.copytree(tiny_checkpoint(dtype), checkpoint, dirs_exist_ok=True)
        built[name] = checkpoint, breakage(checkpoint)
    return built


@pytest.fixture(params=list(BREAKAGES))
def broken(request, broken_checkpoints):
    return request.param, *broken_checkpoints[request.param]


@pytest.fixture(scope="module")
def refusals(broken_checkpoints, server_log_dir):
    """launch_server on every broken checkpoint, started at once (tests/started_together.py)."""
    servers = {
        name: ServerProcess(checkpoint, server_log_dir / f"broken-{name}.log")
        for name, (checkpoint, _) in broken_checkpoints.items()
    }
    with servers_started_together(servers):
        yield servers


def test_validator_names_file_and_tensor(broken):
    _, checkpoint, expected = broken
    with pytest.raises((CheckpointError, Glm5ConfigError)) as err:
        validate_checkpoint(checkpoint, Glm5Config.from_pretrained(checkpoint))
    for fragment in expected:
        assert fragment in str(err.value)


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_intact_checkpoint_validates(tiny_checkpoint, dtype):
    checkpoint = tiny_checkpoint(dtype)
    validate_checkpoint(checkpoint, Glm5Config.from_pretrained(checkpoint))


@pytest.mark.slow
def test_launch_server_refuses_to_serve(broken, refusals):
    name, _, expected = broken
    with pytest.raises(ServerStartError) as err:
        refusals[name].wait_ready()
    for fragment in expected:
        assert fragment in str(err.value)
