"""The named tiny-checkpoint architectures (configs/tiny-archs.json) and `tiny-checkpoint --arch`."""

import json

import pytest

from sglang_glm5.checkpoint.archs import ARCHS_FILE, ArchError, get_arch, load_archs
from sglang_glm5.checkpoint.tiny import tiny_config_dict
from sglang_glm5.checkpoint.tokenizer import build_tokenizer
from sglang_glm5.cli import main
from sglang_glm5.config import Glm5Config
from sglang_glm5.datafiles import CONFIGS_ENV, configs_dir

REAL_ATTENTION_FIELDS = (
    "num_attention_heads", "num_key_value_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "v_head_dim", "index_n_heads", "index_head_dim",
)
LONG_CONTEXT = 32768


@pytest.fixture(scope="module")
def glm5() -> dict:
    return json.loads((configs_dir() / "glm5-config.json").read_text())


@pytest.mark.parametrize("name", list(load_archs()), ids=str)
@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_every_arch_is_a_valid_glm5_config(name, dtype):
    arch = get_arch(name)
    d = tiny_config_dict(build_tokenizer(), arch.num_layers, arch.index_topk, dtype, arch)
    cfg = Glm5Config.from_dict(d, source=name)
    assert cfg.index_topk == arch.index_topk and cfg.num_hidden_layers == arch.num_layers and cfg.has_mtp
    if dtype == "fp8":
        assert cfg.quant.block == arch.fp8_block


def test_real_attn_has_glm5s_attention_dims(glm5):
    arch = get_arch("real-attn")
    assert {k: arch.dims[k] for k in REAL_ATTENTION_FIELDS} == {k: glm5[k] for k in REAL_ATTENTION_FIELDS}
    assert arch.fp8_block == tuple(glm5["quantization_config"]["weight_block_size"])
    assert arch.dims["hidden_size"] < glm5["hidden_size"] and arch.dims["n_routed_experts"] < glm5["n_routed_experts"]


def test_long_has_glm5s_index_topk_and_a_32k_context(glm5):
    arch, tiny = get_arch("long"), get_arch("tiny")
    assert arch.index_topk == glm5["index_topk"] and arch.dims["max_position_embeddings"] >= LONG_CONTEXT
    assert {k: v for k, v in arch.dims.items() if k not in ("index_topk", "max_position_embeddings")} == {
        k: v for k, v in tiny.dims.items() if k not in ("index_topk", "max_position_embeddings")
    }


def test_cli_writes_the_named_arch(tmp_path, capsys):
    out = tmp_path / "long"
    assert main(["tiny-checkpoint", str(out), "--dtype", "bf16", "--arch", "long", "--shards", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    arch = get_arch("long")
    assert config["index_topk"] == arch.index_topk and config["num_hidden_layers"] == arch.num_layers
    assert config["max_position_embeddings"] == arch.dims["max_position_embeddings"]


def test_cli_refuses_an_unknown_arch(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["tiny-checkpoint", str(tmp_path / "x"), "--dtype", "bf16", "--arch", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "archs,message",
    [
        ({"a": {"description": "", "inherit": "a", "num_layers": 2}}, "inherits itself through a -> a"),
        ({"a": {"description": "", "from_glm5": ["no_such_field"], "num_layers": 2}}, "from_glm5 field 'no_such_field'"),
        ({"a": {"description": "", "num_layers": 2, "dims": {}}}, "no index_topk"),
        ({"a": {"description": "", "num_layers": 2, "dims": {"index_topk": 8}, "fp8_block": [32]}}, "fp8_block must be"),
    ],
    ids=["cycle", "unknown-glm5-field", "no-topk", "bad-block"],
)
def test_bad_arch_files_name_the_file_and_the_arch(tmp_path, monkeypatch, archs, message):
    (tmp_path / "glm5-config.json").write_text((configs_dir() / "glm5-config.json").read_text())
    (tmp_path / ARCHS_FILE).write_text(json.dumps({"glm5_config": "glm5-config.json", "archs": archs}))
    monkeypatch.setenv(CONFIGS_ENV, str(tmp_path))
    with pytest.raises(ArchError) as err:
        load_archs()
    assert str(tmp_path / ARCHS_FILE) in str(err.value) and "arch 'a'" in str(err.value) and message in str(err.value)
