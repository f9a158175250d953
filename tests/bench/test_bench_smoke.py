"""The benchmark scripts' pure parts: synthetic real-shape checkpoint, result JSON/markdown, summaries. Fast."""

import json
from dataclasses import asdict, replace

import pytest
import torch
from safetensors import safe_open

from bench import serving_throughput, weight_loading
from bench.lib import common, pyspy
from bench.lib.synthetic_checkpoint import (
    GLM5_DIMS,
    GLM5_FP8_BLOCK,
    SyntheticSpec,
    cached_checkpoint,
    checkpoint_files,
    expected_tensors,
    fp8_byte_share,
    glm5_config,
    plan_shards,
)
from sglang_glm5.config import Glm5Config

REAL = SyntheticSpec(dtype="fp8")  # the benchmark's default: real widths (never written here, only listed)
TINY_DIMS = (
    ("hidden_size", 256), ("intermediate_size", 384), ("moe_intermediate_size", 128), ("num_attention_heads", 2),
    ("num_key_value_heads", 2), ("q_lora_rank", 192), ("kv_lora_rank", 64), ("qk_nope_head_dim", 32),
    ("qk_rope_head_dim", 16), ("v_head_dim", 32), ("index_n_heads", 2), ("index_head_dim", 128),
)
# The writer at tiny widths: kv_a_proj_with_mqa has 80 rows, a ragged 128-row FP8 block as GLM-5's 576 rows have.
SMALL = SyntheticSpec(dtype="bf16", num_layers=2, dense_layers=1, experts=2, vocab=512, shards=3, dims=TINY_DIMS)


def stored(ckpt) -> dict:
    out = {}
    for path in checkpoint_files(ckpt):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                t = f.get_slice(name)
                out[name] = (tuple(t.get_shape()), t.get_dtype())
    return out


@pytest.fixture(scope="module", params=["bf16", "fp8"])
def synthetic(request, tmp_path_factory):
    spec = replace(SMALL, dtype=request.param)
    return spec, cached_checkpoint(spec, tmp_path_factory.mktemp("synthetic"))


def test_synthetic_config_has_glm5_real_dims():
    cfg = glm5_config(REAL)
    for field, value in GLM5_DIMS.items():
        if hasattr(cfg, field):
            assert getattr(cfg, field) == value, field
    assert cfg.vocab_size == 154880 and cfg.quant.block == GLM5_FP8_BLOCK
    assert cfg.num_hidden_layers == 2 and cfg.first_k_dense_replace == 1 and not cfg.has_mtp


def test_real_shape_tensor_table():
    want = expected_tensors(REAL)
    fp8, bf16 = torch.float8_e4m3fn, torch.bfloat16
    assert want["model.embed_tokens.weight"] == ((154880, 6144), bf16)
    assert want["lm_head.weight"] == ((154880, 6144), bf16)
    assert want["model.layers.0.self_attn.q_b_proj.weight"] == ((64 * 256, 2048), fp8)
    assert want["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"] == ((512 + 64, 6144), fp8)
    assert want["model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"] == ((5, 48), torch.float32)
    assert want["model.layers.0.self_attn.kv_b_proj.weight"] == ((64 * (192 + 256), 512), fp8)
    assert want["model.layers.0.self_attn.o_proj.weight"] == ((6144, 64 * 256), fp8)
    assert want["model.layers.0.self_attn.indexer.wq_b.weight"] == ((32 * 128, 2048), fp8)
    assert want["model.layers.0.self_attn.indexer.weights_proj.weight"] == ((32, 6144), bf16)
    assert want["model.layers.0.mlp.down_proj.weight"] == ((6144, 12288), fp8)
    assert want["model.layers.1.mlp.experts.7.gate_proj.weight"] == ((2048, 6144), fp8)
    assert want["model.layers.1.mlp.gate.weight"] == ((8, 6144), bf16)
    assert want["model.layers.1.mlp.gate.e_score_correction_bias"] == ((8,), torch.float32)
    assert "model.layers.1.mlp.experts.8.gate_proj.weight" not in want and "model.layers.2.enorm.weight" not in want


def test_synthetic_checkpoint_stores_the_expected_tensors(synthetic):
    spec, ckpt = synthetic
    got = stored(ckpt)
    dtype_names = {torch.bfloat16: "BF16", torch.float8_e4m3fn: "F8_E4M3", torch.float32: "F32"}
    assert got == {name: (shape, dtype_names[dt]) for name, (shape, dt) in expected_tensors(spec).items()}
    weight_map = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(weight_map) == set(got) and len(checkpoint_files(ckpt)) == len(set(weight_map.values()))
    cfg = Glm5Config.from_pretrained(ckpt)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.n_routed_experts) == (512, 256, 2)
    if spec.dtype == "fp8":
        assert cfg.quant.block == GLM5_FP8_BLOCK
        assert got["model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"][0] == (1, 2)  # 80 rows: ragged
    else:
        assert cfg.quant is None and not any(n.endswith("_scale_inv") for n in got)


def test_synthetic_fp8_dequantizes_close_to_a_normal_init(tmp_path):
    from sglang_glm5.quant.fp8_block import dequantize_fp8_blocks

    ckpt = cached_checkpoint(replace(SMALL, dtype="fp8"), tmp_path)

    name = "model.layers.0.mlp.down_proj.weight"
    path = ckpt / json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"][name]
    with safe_open(str(path), framework="pt") as f:
        w = dequantize_fp8_blocks(f.get_tensor(name), f.get_tensor(name + "_scale_inv"), GLM5_FP8_BLOCK, torch.float32)
    assert torch.isfinite(w).all() and 0 < w.std() < 1


def test_cached_checkpoint_is_reused(synthetic):
    spec, ckpt = synthetic
    before = {p: p.stat().st_mtime_ns for p in checkpoint_files(ckpt)}
    assert cached_checkpoint(spec, ckpt.parent) == ckpt
    assert {p: p.stat().st_mtime_ns for p in checkpoint_files(ckpt)} == before


def test_fp8_byte_share_full_glm5_is_almost_all():
    assert fp8_byte_share(replace(REAL, dtype="bf16")) == 0
    assert 0.1 < fp8_byte_share(REAL) < 0.3  # 2 layers: the BF16 embedding and LM head dominate
    assert fp8_byte_share(REAL, full=True) > 0.99


@pytest.mark.parametrize(
    "sizes, shards, expected",
    [
        ([1, 1, 1, 1], 2, [0, 0, 1, 1]),
        ([10, 1, 1, 1, 10], 3, [0, 1, 1, 1, 2]),
        ([5] * 3, 8, [0, 1, 2]),
        ([3], 1, [0]),
    ],
)
def test_plan_shards_in_order_never_splits(sizes, shards, expected):
    assert plan_shards(sizes, shards) == expected


def test_update_section_replaces_only_its_own_section(tmp_path):
    md = tmp_path / "RESULTS.md"
    common.update_section("a", "## A\none", md)
    common.update_section("b", "## B\ntwo", md)
    common.update_section("a", "## A\nthree", md)
    text = md.read_text()
    assert text.startswith("# Benchmark results")
    assert "three" in text and "one" not in text and "two" in text
    assert text.index("## A") < text.index("## B") and text.count("bench:a:start") == 1


def test_write_json_and_result_stem(tmp_path):
    path = common.write_json({"x": 1.5}, common.result_stem("demo", quick=True), tmp_path)
    assert path.name == "demo-quick.json" and json.loads(path.read_text()) == {"x": 1.5}


@pytest.mark.parametrize("write", [True, False], ids=["write", "no-write"])
def test_publish_prints_the_section_and_writes_only_when_asked(write, tmp_path, capsys):
    md = tmp_path / "RESULTS.md"
    common.publish({"x": 1}, "demo", "## Demo\nbody", write=write, results_dir=tmp_path, results_md=md)
    out = capsys.readouterr().out
    assert out.startswith("## Demo\nbody")
    assert (tmp_path / "demo.json").exists() == write and ("wrote" in out) == write
    assert md.exists() == write and (not write or "body" in md.read_text())


def test_command_line_and_machine():
    assert common.command_line(["--quick", "--reps", "2"]).endswith("--quick --reps 2")
    m = common.machine()
    assert m["cores"] >= 1 and m["cpu_model"]


def _load_result(ours: list[float], copy: list[float]) -> dict:
    return {
        "iterate_page_s": [0.1, 0.1], "iterate_copy_s": copy, "ours_weight_load_s": ours,
        "ours_load_weights_only_s": ours, "server_weight_load_s": [], "ours_weight_load_cpu_s": ours,
        "iterate_copy_cpu_s": copy, "file_bytes": 10**9,
    }


def test_weight_loading_summary_overhead_and_goal():
    s = weight_loading.summarize(_load_result([1.1, 1.1, 9.0], [1.0, 1.0, 0.5]))
    assert s["overhead"] == pytest.approx(0.1) and s["within_goal"]
    assert "median_server_weight_load_s" not in s
    assert not weight_loading.summarize(_load_result([2.0], [1.0]))["within_goal"]


def test_weight_loading_projects_fp8_overhead_by_fp8_bytes():
    r = _load_result([3.0], [1.0])
    r.update(fp8_byte_share=0.2, full_glm5_fp8_byte_share=1.0)
    assert weight_loading.summarize(r)["projected_full_glm5_overhead"] == pytest.approx(10.0)  # 2.0 extra x 1.0/0.2
    assert "projected_full_glm5_overhead" not in weight_loading.summarize(_load_result([3.0], [1.0]))


def test_weight_loading_markdown_names_command_and_ratio():
    r = _load_result([1.5], [1.0])
    r.update(fp8_byte_share=0.0, checkpoint_bytes=10**9, first_weight_load_s=2.0, spec=asdict(SMALL), iterator="it")
    r["summary"] = weight_loading.summarize(r)
    payload = {"args": {"quick": False, "reps": 1, "server_reps": 0}, "machine": common.machine(), "command": "CMD",
               "loadavg_1m_at_end": 1.0,
               "date": "today", "git_commit": "abc", "results": {"bf16": r}, "plot": "x/weight_loading.png"}
    text = weight_loading.markdown(payload)
    assert "`CMD`" in text and "+50%" in text and "results/weight_loading.png" in text


def test_prompt_lengths_span_and_exceed_topk():
    lengths = serving_throughput.prompt_lengths(16, 6, 240)
    assert len(lengths) == 16 and lengths[0] == 6 and lengths[-1] == 240 and lengths == sorted(lengths)
    assert sum(n > 16 for n in lengths) >= 8


def test_server_flags_fit_all_requests_at_once():
    args = serving_throughput.parse_args([])
    lengths = serving_throughput.prompt_lengths(args.num_prompts, args.min_len, args.max_len)
    flags = serving_throughput.server_flags(args, lengths)
    total = int(flags[flags.index("--max-total-tokens") + 1])
    assert total >= sum(-(-(n + args.max_tokens) // 64) * 64 for n in lengths)
    assert flags[flags.index("--dtype") + 1] == "float32"


def test_first_divergence():
    assert serving_throughput.first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert serving_throughput.first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert serving_throughput.first_divergence([1, 2], [1, 2, 3]) == 2


def test_pyspy_summary():
    stacks = pyspy.parse_collapsed(
        "main (a.py:1);ModelRunner.forward (x/site-packages/sglang/m.py:2);mla (x/sglang_glm5/attention/b.py:3) 3\n"
        "main (a.py:1);Scheduler.on_idle (s.py:9) 1\n"
    )
    s = pyspy.summarize(stacks)
    assert s["samples"] == 4
    assert s["self_top"][0] == ("mla (x/sglang_glm5/attention/b.py:3)", 0.75)
    assert s["markers"]["model forward (ModelRunner.forward)"] == 0.75
    assert s["markers"]["scheduler idle (Scheduler.on_idle)"] == 0.25


def test_pyspy_share_counts_stacks_holding_the_frame_within_the_forward():
    stacks = pyspy.parse_collapsed(
        "main (a.py:1);ModelRunner.forward (m.py:2);Glm5Indexer.forward (i.py:3);mm (t.py:4) 3\n"
        "main (a.py:1);ModelRunner.forward (m.py:2);sparse_mla (d.py:5) 5\n"
        "main (a.py:1);Scheduler.on_idle (s.py:9) 2\n"
    )
    assert pyspy.share(stacks, "Glm5Indexer.forward (") == (0.3, 10)
    assert pyspy.share(stacks, "Glm5Indexer.forward (", within="ModelRunner.forward (") == (3 / 8, 8)
    assert pyspy.share(stacks, "absent (") == (0.0, 10) and pyspy.share([], "x") == (0.0, 0)


def test_serving_section_states_equal_work():
    tokens = {"prompt": 1082, "output": 1024}
    side = {"seconds": [2.0, 3.0], "cpu_seconds": [1.0], "tokens": tokens}
    payload = {
        "command": "CMD", "date": "today", "git_commit": "abc", "machine": common.machine(), "prompt_lengths": [6, 240],
        "prompts_longer_than_topk": 1, "loadavg_1m_at_end": 1.0, "agreement": 16, "plot": "x/serving_throughput.png",
        "args": {"quick": False, "layers": 4, "index_topk": 16, "threads": 1, "num_prompts": 16, "max_tokens": 64},
        "server": dict(side, check={"prompt_tokens": 240, "passed": True}), "hf": side,
        "server_tok_s": 400.0, "hf_tok_s": 100.0, "ratio": 4.0, "server_tok_per_cpu_s": 1.0, "hf_tok_per_cpu_s": 1.0,
        "cpu_ratio": 1.0,
    }  # fmt: skip
    text = serving_throughput.markdown(payload)
    assert "one `generate` per prompt" in text and "left-padded" not in text
    assert "server 1082 (its meta_info) vs HF\n1082" in text and "server 1024 vs HF 1024" in text


def test_quick_flags():
    assert weight_loading.parse_args(["--quick"]).server_reps == 0
    assert serving_throughput.parse_args(["--quick"]).num_prompts < 16


@pytest.mark.parametrize("shape", [(256, 384), (80, 200)], ids=["whole-blocks", "ragged"])
def test_broadcast_dequant_is_bit_identical_to_ours(shape):
    from bench.fp8_dequant import BLOCK, dequantize_broadcast
    from sglang_glm5.quant.fp8_block import dequantize_fp8_blocks, quantize_fp8_blocks

    w_fp8, scale = quantize_fp8_blocks(torch.randn(shape).to(torch.bfloat16), BLOCK)
    assert torch.equal(dequantize_broadcast(w_fp8, scale), dequantize_fp8_blocks(w_fp8, scale, BLOCK, torch.bfloat16))
