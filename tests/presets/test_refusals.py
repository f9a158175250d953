"""Invalid launches are refused before anything starts, each with a message that says what to use instead;
broken preset files are refused naming the file and the field."""

import json
import shutil

import pytest

from sglang_glm5.cli import main
from sglang_glm5.presets.catalog import load_catalog
from sglang_glm5.presets.compose import Refusal, compose
from sglang_glm5.presets.files import PresetError
from sglang_glm5.presets.flags import to_argv

CATALOG = load_catalog()
AMD_PRESETS = ["mi300x-bf16", "mi325x-bf16", "mi355x-bf16"]
EAGLE_PRESETS = "b200-bf16 / b200-fp8 / cpu-tiny / h100-bf16 / h100-fp8 / h200-bf16 / h200-fp8"
INDEXCACHE_PRESETS = "b200-fp8 / h100-fp8 / h200-fp8"


@pytest.mark.parametrize("preset", AMD_PRESETS)
def test_eagle_on_amd(preset):
    with pytest.raises(Refusal) as e:
        compose(CATALOG, preset, ["eagle"])
    assert str(e.value) == (
        f"preset {preset} cannot use eagle: EAGLE speculative decoding is not supported for GLM-5 on AMD GPUs (cookbook)"
        f": launch without eagle, or use {EAGLE_PRESETS} instead"
    )


@pytest.mark.parametrize("hardware", ["mi300x", "mi325x", "mi355x"])
def test_fp8_on_amd(hardware):
    with pytest.raises(PresetError, match=(
        f"^no preset '{hardware}-fp8': the cookbook lists no FP8 deployment of GLM-5 on AMD GPUs: use {hardware}-bf16 instead$"
    )):
        compose(CATALOG, f"{hardware}-fp8")


@pytest.mark.parametrize("tp,instead", [(12, "8 or 16"), (3, "2 or 4"), (24, "16 or 32"), (128, "32 or 64")], ids=lambda v: str(v))
def test_tp_that_does_not_divide_the_heads(tp, instead):
    with pytest.raises(Refusal, match=f"^tp {tp} does not divide GLM-5's 64 attention heads: use tp {instead} instead$"):
        compose(CATALOG, "h200-fp8", tp=tp)


def test_dp_attention_needs_tp_above_1_and_is_offered_on_cpu():
    with pytest.raises(Refusal, match="^preset cpu-tiny cannot use dp-attention at tp 1: .* use --tp 2 or more$"):
        compose(CATALOG, "cpu-tiny", ["dp-attention"], model_path="/ckpt")
    spec = compose(CATALOG, "cpu-tiny", ["dp-attention"], tp=2, model_path="/ckpt")
    assert spec.options["attention_dp_size"] == 2 and spec.nnodes == 1


@pytest.mark.parametrize(
    "preset,feature,message",
    [
        ("h200-bf16", "indexcache", ("the released IndexCache pattern was searched for GLM-5-FP8 (cookbook): launch without "
         f"indexcache, or use {INDEXCACHE_PRESETS} instead")),
        ("mi355x-bf16", "indexcache", "the released IndexCache pattern was searched for GLM-5-FP8"),
    ],
    ids=["indexcache-on-bf16", "indexcache-on-amd"],
)
def test_feature_not_offered(preset, feature, message):
    with pytest.raises(Refusal, match=f"^preset {preset} cannot use {feature}: "):
        compose(CATALOG, preset, [feature], model_path="/ckpt")
    with pytest.raises(Refusal) as e:
        compose(CATALOG, preset, [feature], model_path="/ckpt")
    assert message in str(e.value)


def test_unknown_feature_and_preset():
    with pytest.raises(Refusal, match="^unknown feature 'mtp': use one of eagle, dp-attention, indexcache instead$"):
        compose(CATALOG, "h200-fp8", ["mtp"])
    with pytest.raises(PresetError, match="^unknown preset 'a100-fp8': use one of b200-bf16, .*, mi355x-bf16 instead$"):
        compose(CATALOG, "a100-fp8")


def test_cpu_tiny_needs_a_model_path():
    with pytest.raises(Refusal, match="^preset cpu-tiny needs --model-path: build a tiny checkpoint with `sglang-glm5 tiny-checkpoint DIR`$"):
        compose(CATALOG, "cpu-tiny")


def test_launch_cli_refuses_with_exit_status_2(capsys):
    assert main(["launch", "--preset", "mi300x-bf16", "--with", "eagle", "--print-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sglang-glm5 launch: error: preset mi300x-bf16 cannot use eagle: ") and "instead" in err


def test_extra_flags_unknown_to_sglang_are_refused(capsys):
    assert main(["launch", "--preset", "h200-fp8", "--print-only", "--", "--nsa-decode-backend", "flashmla_kv"]) == 2
    assert "SGLang 0.5.23 launch_server rejects the command: unrecognized arguments: --nsa-decode-backend" in capsys.readouterr().err


def test_option_sglang_does_not_define(server_arg_parser):
    table = {"dsa_decode_backend": ({"dest": "nsa_decode_backend"},)}
    with pytest.raises(PresetError, match=r"^option 'dsa_decode_backend': SGLang 0\.5\.23 defines none of the arguments \['nsa_decode_backend'\]"):
        to_argv(server_arg_parser, table, {"dsa_decode_backend": "flashmla_kv"})


def test_value_outside_sglang_choices(server_arg_parser):
    table = {"dsa_decode_backend": ({"dest": "dsa_decode_backend"},)}
    with pytest.raises(PresetError, match=r"^option 'dsa_decode_backend': --dsa-decode-backend accepts none of \['magic'\]"):
        to_argv(server_arg_parser, table, {"dsa_decode_backend": "magic"})


@pytest.fixture
def configs_copy(tmp_path):
    root = tmp_path / "configs"
    shutil.copytree(CATALOG.root, root)
    return root


def edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "file,change,message",
    [
        ("presets/h200-fp8.json", lambda d: d.update(tp=12), "presets/h200-fp8.json: field 'tp': 12 does not divide GLM-5's 64 attention heads"),
        ("presets/h200-fp8.json", lambda d: d.update(tp="8"), "presets/h200-fp8.json: field 'tp' must be int, got '8'"),
        ("presets/h200-fp8.json", lambda d: d["options"].update(nsa_decode_backend="x"), "presets/h200-fp8.json: field 'options': unknown option 'nsa_decode_backend'"),
        ("presets/h200-fp8.json", lambda d: d.pop("hardware"), "presets/h200-fp8.json: missing field 'hardware'"),
        ("presets/h200-fp8.json", lambda d: d.update(hardware="a100"), "presets/h200-fp8.json: field 'hardware': unknown 'a100'"),
        ("presets/mi300x-bf16.json", lambda d: d.update(dtype="fp8"), "presets/mi300x-bf16.json: field 'dtype': 'fp8' is not offered on mi300x"),
        ("presets/h200-fp8.json", lambda d: d.update(extra=1), "presets/h200-fp8.json: unknown field(s) ['extra']"),
        ("features.json", lambda d: d["features"]["indexcache"]["options"]["model_override_args"].update(index_topk_pattern="FS"),
         "features.json: features.indexcache: options.model_override_args.index_topk_pattern: index_topk_pattern has 2 characters but the model has 78 decoder layers"),
        ("features.json", lambda d: d["features"]["eagle"]["refusals"].clear(), "features.json: features.eagle: refusals.vendor: missing the message"),
        ("glm5-config.json", lambda d: d.pop("index_topk"), "glm5-config.json: missing field 'index_topk' (DSA indexer)"),
        ("gpus.json", lambda d: d["hardware"]["h100"].update(gpus_per_node=0), "gpus.json: hardware.h100: field 'gpus_per_node' must be >= 1"),
        ("preset-defaults.json", lambda d: d["options"].update(reasoning="glm5"), "preset-defaults.json: field 'options': unknown option 'reasoning'"),
    ],
    ids=["tp-not-dividing-heads", "tp-wrong-type", "unknown-option", "missing-hardware", "unknown-hardware",
         "fp8-on-amd-file", "unknown-field", "indexcache-pattern-length", "refusal-message-missing", "model-config-field", "gpus-per-node",
         "defaults-unknown-option"],
)
def test_broken_file_names_file_and_field(configs_copy, file, change, message):
    edit(configs_copy / file, change)
    with pytest.raises(PresetError) as e:
        load_catalog(configs_copy)
    assert str(e.value).startswith(str(configs_copy / message.split(":")[0])) and message in str(e.value)


@pytest.mark.parametrize(
    "preset,model_path,message",
    [
        ("mi300x-bf16", "zai-org/GLM-5-FP8", ("zai-org/GLM-5-FP8 holds FP8 weights but preset mi300x-bf16 serves BF16: the cookbook"
         " lists no FP8 deployment of GLM-5 on AMD GPUs: use zai-org/GLM-5 instead")),
        ("h200-bf16", "zai-org/GLM-5-FP8", "zai-org/GLM-5-FP8 holds FP8 weights but preset h200-bf16 serves BF16: use h200-fp8 instead"),
        ("h200-fp8", "zai-org/GLM-5", "zai-org/GLM-5 holds BF16 weights but preset h200-fp8 serves FP8: use h200-bf16 instead"),
    ],
    ids=["fp8-checkpoint-on-amd", "fp8-checkpoint-on-bf16-preset", "bf16-checkpoint-on-fp8-preset"],
)
def test_checkpoint_of_the_other_dtype(preset, model_path, message):
    with pytest.raises(Refusal) as e:
        compose(CATALOG, preset, model_path=model_path)
    assert str(e.value) == message


def test_local_fp8_checkpoint_on_amd_is_read_from_its_config(tmp_path):
    config = json.loads((CATALOG.root / "glm5-config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(Refusal, match=f"^{tmp_path} holds FP8 weights but preset mi355x-bf16 serves BF16: "):
        compose(CATALOG, "mi355x-bf16", model_path=str(tmp_path))
    config.pop("quantization_config")
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert compose(CATALOG, "mi355x-bf16", model_path=str(tmp_path)).options["model_path"] == str(tmp_path)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--preset", "h100-fp8", "--tp", "8"], ("preset h100-fp8 at tp 8 does not fit: the weights need 88.69 GiB per GPU,"
         " mem-fraction-static 0.85 of NVIDIA H100 SXM 80GB holds 67.70 GiB: use --tp 16 instead")),
        (["--preset", "h100-bf16", "--with", "dp-attention"], ("preset h100-bf16 at tp 32 does not fit: the weights need 68.06 GiB"
         " per GPU, mem-fraction-static 0.85 of NVIDIA H100 SXM 80GB holds 67.70 GiB: use --tp 64 instead")),
    ],
    ids=["h100-fp8-tp8", "h100-bf16-dp-attention"],
)
def test_launch_refuses_weights_that_do_not_fit(capsys, argv, message):
    assert main(["launch", *argv, "--print-only"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--tp-size", "4"], "tp 4 given after `--` would skip the preset's checks: use --tp 4 instead"),
        (["--mem-fraction-static", "0.5"], ("preset h200-fp8 at tp 8 does not fit: the weights need 88.69 GiB per GPU,"
         " mem-fraction-static 0.5 of NVIDIA H200 SXM 141GB holds 70.20 GiB: use --tp 16 instead")),
    ],
    ids=["tp-after-dashes", "mem-fraction-after-dashes"],
)
def test_flags_after_dashes_are_checked_too(capsys, extra, message):
    assert main(["launch", "--preset", "h200-fp8", "--print-only", "--", *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_larger_mem_fraction_after_dashes_is_accepted(capsys):
    assert main(["launch", "--preset", "h200-fp8", "--print-only", "--", "--mem-fraction-static", "0.9"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("--mem-fraction-static 0.9")


@pytest.mark.parametrize("preset", ["h200-fp8", "cpu-tiny"])
def test_eagle_with_dp_attention_is_refused_before_anything_runs(capsys, preset):
    """The MTP draft of an idle attention-DP rank would leave the MoE's collectives waiting: refused by name, also
    with --print-only (which skips the start-up check)."""
    argv = ["launch", "--preset", preset, "--with", "eagle,dp-attention", "--print-only"]
    if preset == "cpu-tiny":
        argv += ["--tp", "2", "--model-path", "M"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--speculative-algorithm EAGLE with --attn-dp-size" in err
    assert "EAGLE with attention DP is not supported for GLM-5 yet" in err
