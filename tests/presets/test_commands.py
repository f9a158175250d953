"""Every preset x every allowed feature combination parses with the installed SGLang's own argument parser,
and its values are the cookbook's (expected values are written here from the cookbook, not read from configs/)."""

import json
import shutil

import pytest

from sglang_glm5.cli import main
from sglang_glm5.presets.catalog import load_catalog
from sglang_glm5.presets.compose import compose
from sglang_glm5.presets.flags import SGLangArgumentError, is_deprecated, parse, to_argv
from sglang_glm5.presets.launch_cli import build, head_address, node_commands
from tests.presets.combos import preset_feature_combinations

CATALOG = load_catalog()
MODEL_PATH = "/models/glm-5"

# Cookbook table (GLM-5): hardware x dtype -> tp.
COOKBOOK_TP = {
    ("h100", "fp8"): 16, ("h100", "bf16"): 32,
    ("h200", "fp8"): 8, ("h200", "bf16"): 16,
    ("b200", "fp8"): 8, ("b200", "bf16"): 16,
    ("mi300x", "bf16"): 8, ("mi325x", "bf16"): 8, ("mi355x", "bf16"): 8,
}
GPUS_PER_NODE = 8
# Cookbook tips, as SGLang 0.5.23 names the destinations of the flags.
B200_FP8 = {
    "ep_size": 1, "attention_backend": "dsa", "dsa_prefill_backend": "trtllm", "dsa_decode_backend": "trtllm",
    "moe_runner_backend": "flashinfer_trtllm", "quantization": "fp8",
}
AMD = {"dsa_prefill_backend": "tilelang", "dsa_decode_backend": "tilelang", "chunked_prefill_size": 131072, "watchdog_timeout": 1200}
PARSERS = {"reasoning_parser": "glm5", "tool_call_parser": "glm5"}  # ours (plugin); the cookbook's: glm45 / glm47
COOKBOOK_PARSERS = {"reasoning_parser": "glm45", "tool_call_parser": "glm47"}
H200_FP8_README = {"mem_fraction_static": 0.85, "served_model_name": "glm-5-fp8"}
EAGLE = {"speculative_algorithm": "EAGLE", "speculative_num_steps": 3, "speculative_eagle_topk": 1, "speculative_num_draft_tokens": 4}
RELEASED_PATTERN = "FFSFSSSFSSFFFSSSFFFSFSSSSSSFFSFFSFFSSFFFFFFSFFFFFSFFSSSSSSFSFFFSFSSSFSFFSFFSSS"
CPU = {"device": "cpu", "tp_size": 1, "attention_backend": "dsa"}


COMBINATIONS = preset_feature_combinations(CATALOG)


def expected(name: str, features: tuple[str, ...]) -> dict:
    preset = CATALOG.presets[name]
    hw, dtype = preset.hardware.name, preset.dtype
    if hw == "cpu":
        want = dict(CPU)
    else:
        tp = COOKBOOK_TP[(hw, dtype)]
        want = {"tp_size": tp, "nnodes": -(-tp // GPUS_PER_NODE), "device": "cuda"}
    want.update(PARSERS, model_path=MODEL_PATH)
    if (hw, dtype) == ("b200", "fp8"):
        want.update(B200_FP8)
    if preset.hardware.vendor == "amd":
        want.update(AMD, speculative_algorithm=None)
    if (hw, dtype) == ("h200", "fp8"):
        want.update(H200_FP8_README)
    if "eagle" in features:
        want.update(EAGLE)
    if "dp-attention" in features:
        want["attn_dp_size"] = want["tp_size"]
    return want


def test_every_preset_has_combinations():
    assert {p.values[0] for p in COMBINATIONS} == set(CATALOG.presets)
    assert len(CATALOG.presets) == len(COOKBOOK_TP) + 1  # + cpu-tiny


@pytest.mark.parametrize("name,features", COMBINATIONS)
def test_command_parses_with_cookbook_values(server_arg_parser, name, features):
    argv = to_argv(server_arg_parser, CATALOG.options, compose(CATALOG, name, features, model_path=MODEL_PATH).options)
    ns = parse(server_arg_parser, argv)
    got = {k: getattr(ns, k) for k in expected(name, features)}
    assert got == expected(name, features), " ".join(argv)
    pattern = json.loads(ns.json_model_override_args).get("index_topk_pattern")
    assert pattern == (RELEASED_PATTERN if "indexcache" in features else None)
    if (CATALOG.presets[name].hardware.name, CATALOG.presets[name].dtype) == ("b200", "fp8"):
        assert ns.flashinfer_allreduce_fusion_backend == "auto" or ns.enable_flashinfer_allreduce_fusion


@pytest.mark.parametrize("name,features", COMBINATIONS)
def test_command_uses_no_deprecated_flag(server_arg_parser, name, features):
    argv = to_argv(server_arg_parser, CATALOG.options, compose(CATALOG, name, features, model_path=MODEL_PATH).options)
    deprecated = {s for a in server_arg_parser._actions if is_deprecated(a) for s in a.option_strings}
    assert not [a for a in argv if a in deprecated]


def test_switching_back_to_the_cookbook_parsers_is_one_data_change(server_arg_parser, tmp_path):
    root = tmp_path / "configs"
    shutil.copytree(CATALOG.root, root)
    defaults = json.loads((root / "preset-defaults.json").read_text())
    defaults["options"].update(COOKBOOK_PARSERS)
    (root / "preset-defaults.json").write_text(json.dumps(defaults))
    catalog = load_catalog(root)
    for name in catalog.presets:
        ns = parse(server_arg_parser, to_argv(server_arg_parser, catalog.options, compose(catalog, name, model_path=MODEL_PATH).options))
        assert {k: getattr(ns, k) for k in COOKBOOK_PARSERS} == COOKBOOK_PARSERS


def test_cookbook_nsa_flags_are_rejected_by_the_installed_sglang(server_arg_parser):
    cookbook_b200 = ["--model-path", MODEL_PATH, "--nsa-prefill-backend", "trtllm", "--nsa-decode-backend", "trtllm"]
    with pytest.raises(SGLangArgumentError, match="unrecognized arguments: --nsa-prefill-backend"):
        parse(server_arg_parser, cookbook_b200)


def test_cpu_tiny_launch_adds_the_serve_cpu_defaults_and_parses():
    spec = compose(CATALOG, "cpu-tiny", model_path=MODEL_PATH)
    command, env, parsed = build(CATALOG, spec, ["--port", "30123"], {})
    args = command[command.index("sglang.launch_server") + 1 :]
    assert args[args.index("--device") + 1] == "cpu" and "--disable-overlap-schedule" in args
    assert args[args.index("--port") + 1] == "30123"
    assert env["SGLANG_USE_CPU_ENGINE"] == "1"
    assert parsed["device"] == "cpu" and parsed["tp"] == 1 and parsed["mem_fraction_static"] == 0.05


def test_launch_prints_one_command_per_node(capsys):
    assert main(["launch", "--preset", "h100-fp8", "--print-only", "--head-address", "10.1.2.3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "tp 16 spans 2 nodes (8 ranks each): run node R's command on node R, the head (node 0) first" in out[-5]
    assert out[-4] == "# node 0 (head)" and out[-2] == "# node 1"
    for rank, line in ((0, out[-3]), (1, out[-1])):
        assert line.startswith("+ ") and " -m sglang.launch_server --model-path zai-org/GLM-5-FP8 --device cuda --tp-size 16 --nnodes 2 " in line
        assert f" --node-rank {rank} --dist-init-addr 10.1.2.3:25000 --host 0.0.0.0" in line


def test_node_commands_parse_with_sglang_and_differ_only_in_node_rank(server_arg_parser):
    spec = compose(CATALOG, "h200-bf16", model_path=MODEL_PATH)
    nodes = node_commands(CATALOG, spec, ["--host", "10.0.0.9"], {}, head_address("head.example:31000"))
    assert len(nodes) == 2
    for rank, (command, _, _) in enumerate(nodes):
        ns = parse(server_arg_parser, command[command.index("sglang.launch_server") + 1 :])
        assert (ns.nnodes, ns.node_rank, ns.dist_init_addr, ns.host, ns.tp_size) == (2, rank, "head.example:31000", "10.0.0.9", 16)
    assert [a for a in nodes[0][0] if a not in ("0", "1")] == [a for a in nodes[1][0] if a not in ("0", "1")]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--preset", "h100-fp8"], "run on each node with --node-rank R --head-address HOST[:PORT]"),
        (["--preset", "h100-fp8", "--node-rank", "2", "--print-only"], "--node-rank 2 is outside 0..1"),
        (["--preset", "h100-fp8", "--head-address", "h:port", "--print-only"], "--head-address 'h:port' is not HOST or HOST:PORT"),
        (["--preset", "h100-fp8", "--nnodes", "3", "--print-only"], "--nnodes 3 does not divide tp 16 into equal nodes: use --nnodes 2 or 4 or 8"),
        (["--preset", "h100-fp8", "--nnodes", "1", "--print-only"], "--nnodes 1 puts 16 ranks on a node of 8 GPUs"),
        (["--preset", "h200-fp8", "--node-rank", "1", "--print-only"], "tp 8 runs on one node"),
    ],
    ids=["run-needs-rank-and-head", "rank-out-of-range", "bad-address", "nnodes-not-divisor", "too-few-nodes", "single-node-rank"],
)
def test_multi_node_refusals(capsys, argv, message):
    assert main(["launch", *argv]) == 2
    assert message in capsys.readouterr().err


def test_launch_with_indexcache_notes_that_sglang_glm5_honours_the_pattern(capsys):
    assert main(["launch", "--preset", "h200-fp8", "--with", "indexcache", "--print-only"]) == 0
    out = capsys.readouterr().out
    assert "note (indexcache): SGLang 0.5.23 alone ignores this override for GLM-5" in out
    assert "IndexCache: 40 F / 38 S, indexer FLOPs -49%" in out


def test_presets_table_lists_every_preset_with_its_features(capsys):
    assert main(["presets"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.strip() and not line.startswith("files:")}
    assert set(rows) == set(CATALOG.presets)
    assert rows["h200-fp8"][:6] == ["h200-fp8", "h200", "fp8", "8", "zai-org/GLM-5-FP8", "eagle,dp-attention,indexcache"]
    assert rows["mi355x-bf16"][5] == "dp-attention" and rows["cpu-tiny"][4:7] == ["--model-path", "DIR", "eagle,dp-attention"]


@pytest.mark.parametrize("command", ["launch", "plan"])
def test_with_flag_help_names_the_features_of_the_data_file(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"comma-separated: {','.join(load_catalog().features)}" in help_text
