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
from tests.started_together import servers_started_together

BAD_OVERRIDES = {"not-json": '{"index_topk": 8', "unknown-field": '{"index_topk_typo": 8}'}


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


@pytest.fixture(scope="module")
def refusals(tiny_checkpoint, server_log_dir):
    """This module's launch_server refusals, started at once (tests/started_together.py)."""
    checkpoint = tiny_checkpoint("bf16")
    servers = {
        name: ServerProcess(
            checkpoint, server_log_dir / f"bad-override-{name}.log", ["--json-model-override-args", override]
        )
        for name, override in BAD_OVERRIDES.items()
    }
    servers["pd"] = ServerProcess(checkpoint, server_log_dir / "refuse-pd.log", ["--disaggregation-mode", "prefill"])
    with servers_started_together(servers):
        yield servers


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,fragments",
    [
        # SGLang's ModelConfig parses the flag first; our hook there names the flag and the JSON error
        ("not-json", ["--json-model-override-args is not valid JSON: Expecting ',' delimiter"]),
        ("unknown-field", ["config.json", "unknown override field(s) ['index_topk_typo']"]),
    ],
    ids=list(BAD_OVERRIDES),
)
def test_launch_server_refuses_bad_override_json(refusals, name, fragments):
    with pytest.raises(ServerStartError) as err:
        refusals[name].wait_ready()
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.slow
def test_launch_server_refuses_pd_disaggregation(refusals):
    """SGLang's PD transfer moves its pool buffers; no CPU run can show a transferred request is right (its `fake`
    transfer backend moves nothing), so the start-up stops, naming the flag. HiCache takes the same path (the start-up
    check's unit test in tests/attention/test_index_k_store.py)."""
    with pytest.raises(ServerStartError) as err:
        refusals["pd"].wait_ready()
    assert "--disaggregation-mode prefill: not verified with GLM-5's DSA backend" in str(err.value)
