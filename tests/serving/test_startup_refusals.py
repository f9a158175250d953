"""Start-up with bad configuration fails before serving, with a message that names the problem.

Covered elsewhere and not repeated here: unknown presets and features at compose level (tests/presets/
test_refusals.py) and checkpoints that do not match their config.json (tests/checkpoint/test_bad_checkpoints.py,
each also through launch_server). Here: the `launch` command with an unknown preset, and
`--json-model-override-args` that is not JSON or names a field GLM-5's config does not have, through launch_server.
"""

import pytest

from sglang_glm5.cli import main
from sglang_glm5.config import Glm5Config, Glm5ConfigError
from sglang_glm5.serving.process import ServerProcess, ServerStartError


def test_launch_refuses_an_unknown_preset(capsys, tiny_checkpoint):
    argv = ["launch", "--preset", "a100-fp8", "--model-path", str(tiny_checkpoint("bf16")), "--print-only"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'a100-fp8': use one of " in err and "cpu-tiny" in err


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"index_topk_typo": 8}, "unknown override field(s) ['index_topk_typo']"),
        ({"index_topk": "8"}, "field 'index_topk'"),
        ({"qk_rope_head_dim": 7}, "field 'qk_rope_head_dim' (RoPE) must be even, got 7"),
    ],
    ids=["unknown-field", "string-for-int", "odd-rope-dim"],
)
def test_config_refuses_bad_overrides(tiny_checkpoint, overrides, message):
    checkpoint = tiny_checkpoint("bf16")
    with pytest.raises(Glm5ConfigError) as err:
        Glm5Config.from_pretrained(checkpoint, overrides=overrides)
    assert str(checkpoint / "config.json") in str(err.value) and message in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    "override,fragments",
    [
        # SGLang's ModelConfig parses the flag first; our hook there names the flag and the JSON error
        ('{"index_topk": 8', ["--json-model-override-args is not valid JSON: Expecting ',' delimiter"]),
        ('{"index_topk_typo": 8}', ["config.json", "unknown override field(s) ['index_topk_typo']"]),
    ],
    ids=["not-json", "unknown-field"],
)
def test_launch_server_refuses_bad_override_json(tiny_checkpoint, server_log_dir, override, fragments, request):
    log = server_log_dir / f"bad-override-{request.node.callspec.id}.log"
    with pytest.raises(ServerStartError) as err:
        ServerProcess(tiny_checkpoint("bf16"), log, ["--json-model-override-args", override]).start()
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.slow
def test_launch_server_refuses_pd_disaggregation(tiny_checkpoint, server_log_dir):
    """SGLang's PD transfer moves its pool buffers; no CPU run can show a transferred request is right (its `fake`
    transfer backend moves nothing), so the start-up stops, naming the flag. HiCache takes the same path (the start-up
    check's unit test in tests/attention/test_index_k_store.py)."""
    with pytest.raises(ServerStartError) as err:
        ServerProcess(tiny_checkpoint("bf16"), server_log_dir / "refuse-pd.log", ["--disaggregation-mode", "prefill"]).start()
    assert "--disaggregation-mode prefill: not verified with GLM-5's DSA backend" in str(err.value)
