"""CUDA graphs at start-up: the capability table says which implementation a graph can capture; the start-up step
(SGLang's `handle_model_capability_adjustments`) turns graphs off for a run that picks an unsafe one, with the reason
logged; presets say what they do about graphs."""

import json
import os
import subprocess
import sys

import pytest

from sglang_glm5.attention.capabilities import SIMULATE_ENV, Device, Target, load_capabilities
from sglang_glm5.dsa.impls import DSA_IMPLS
from sglang_glm5.presets.catalog import load_catalog
from sglang_glm5.serving.startup_check import PREFILL_GRAPHS_OFF, StartupRequest, decide, graph_changes

RESOLVE_TIMEOUT_S = 300
PRESET_ARCH = {"h100": "sm_90", "h200": "sm_90", "b200": "sm_100", "mi300x": "gfx942", "mi325x": "gfx942", "mi355x": "gfx950"}


@pytest.fixture(scope="module")
def table():
    return load_capabilities()


@pytest.mark.parametrize("name", ["reference", "triton", "tilelang"])
def test_graph_safe_implementations(table, name):
    assert table.why_not_graph({"prefill": name, "decode": name}) == ()


def test_trtllm_decode_is_not_graph_safe(table):
    reasons = table.why_not_graph({"prefill": "trtllm", "decode": "trtllm"})
    assert reasons == (
        "--dsa-decode-backend trtllm: its sparse_mla_decode checks one query token per request with torch.unique, "
        "a host sync that CUDA graph capture refuses",
    )
    assert table.why_not_graph({"prefill": "trtllm", "decode": "triton"}) == ()


def request(tmp_path, decode):
    return StartupRequest(str(tmp_path), None, "bfloat16", {"prefill": "triton", "decode": decode}, 8, strict=False)


def test_graph_changes(tmp_path):
    env = {SIMULATE_ENV: "sm_100"}
    unsafe, safe = decide(request(tmp_path, "trtllm"), env=env), decide(request(tmp_path, "triton"), env=env)
    assert graph_changes(unsafe, decode_graphs=True, prefill_graphs=False) == {"decode": unsafe.graphs_off[0]}
    assert graph_changes(unsafe, decode_graphs=False, prefill_graphs=False) == {}  # graphs already off
    assert graph_changes(safe, decode_graphs=True, prefill_graphs=False) == {}
    assert graph_changes(safe, decode_graphs=True, prefill_graphs=True) == {"prefill": PREFILL_GRAPHS_OFF}


def resolve(checkpoint, *flags):
    env = {**os.environ, SIMULATE_ENV: "sm_100"}
    cmd = [sys.executable, "-m", "tests.serving.resolve_graph_config", str(checkpoint), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize(
    "decode,prefill_flag,want",
    [
        ("trtllm", ["--cuda-graph-backend-prefill", "breakable"], {"decode": "disabled", "prefill": "disabled"}),
        ("triton", [], {"decode": "full", "prefill": "disabled"}),
    ],
    ids=["trtllm-decode-and-prefill-graphs-off", "triton-decode-graphs-on"],
)
def test_server_args_resolution_turns_graphs_off_with_a_reason(tiny_checkpoint, decode, prefill_flag, want):
    """SGLang's own resolution (simulated sm_100, graphs on as on a GPU): the resolved graph config and the log."""
    flags = ["--dsa-decode-backend", decode, "--dsa-prefill-backend", "triton", "--kv-cache-dtype", "bfloat16", *prefill_flag]
    config, log = resolve(tiny_checkpoint("bf16"), *flags)
    assert config == want
    assert ("GLM-5: CUDA graphs off for decode (as --disable-cuda-graph): --dsa-decode-backend trtllm:" in log) == (decode == "trtllm")
    assert (f"GLM-5: CUDA graphs off for prefill (as --cuda-graph-backend-prefill disabled): {PREFILL_GRAPHS_OFF}" in log) == bool(prefill_flag)


def graph_category(table, preset) -> str:
    """"on" / "off" / "vendor" (off only where flashmla's vendor packages import and it is picked) for a preset."""
    options = dict(preset.options)
    flags = {phase: options.get(f"dsa_{phase}_backend") for phase in ("prefill", "decode")}
    kv = options.get("kv_cache_dtype") or "bfloat16"
    target = Target(Device(PRESET_ARCH[preset.hardware.name], preset.hardware.name), "bfloat16" if kv == "auto" else kv, 8)
    everything = tuple(DSA_IMPLS)
    without_vendor = tuple(n for n in DSA_IMPLS if not DSA_IMPLS[n].requires)
    unsafe = [bool(table.why_not_graph(table.choose(flags, target, available).backends)) for available in (everything, without_vendor)]
    return "off" if all(unsafe) else "vendor" if any(unsafe) else "on"


NOTE_OF = {"on": "CUDA graphs: SGLang's default", "off": "CUDA graphs: decode off", "vendor": "CUDA graphs: SGLang's default with"}


def test_presets_state_what_they_do_about_graphs(table):
    catalog = load_catalog()
    for name, preset in catalog.presets.items():
        notes = [n for n in preset.notes if n.startswith("CUDA graphs:")]
        assert len(notes) == 1, f"{name}: one 'CUDA graphs:' note"
        if preset.hardware.name not in PRESET_ARCH:
            assert "off on CPU" in notes[0], name
            continue
        category = graph_category(table, preset)
        assert notes[0].startswith(NOTE_OF[category]), f"{name} ({category}): {notes[0]}"
        if category == "on":
            assert not notes[0].startswith(NOTE_OF["vendor"]), name
