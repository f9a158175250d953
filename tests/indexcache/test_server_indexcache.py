"""The cookbook's IndexCache flag through SGLang's real launch_server on a tiny GLM-5: which layers run the indexer
(every indexer call is logged under SGLANG_GLM5_TRACE_INDEXER=1), parity with HF transformers run with the same
`indexer_types`, all-F == no pattern, and every malformed pattern refused at start-up."""

import json
import os
import re
from collections import Counter

import pytest

from sglang_glm5.attention.backend import TRACE_INDEXER_ENV
from sglang_glm5.config import Glm5Config, Glm5ConfigError
from bench.lib import load_client
from sglang_glm5.serving.process import ServerProcess, ServerStartError
from tests.started_together import servers_started_together
from tests.models.test_hf_parity import prompt_ids, server_logprobs, vocab_size
from tests.oracle import hf_greedy, hf_logprobs

PATTERN = "FSSF"  # the tiny model has 4 decoder layers
OVERRIDE_FLAG = "--json-model-override-args"
LOGPROB_ATOL = 1e-4
GREEDY_TOKENS = 16
PROMPT_LENGTHS = (41, 77)
REQUEST_TIMEOUT_S = 300
CALL_LINE = re.compile(r"GLM-5 DSA indexer call: layer (\d+) ")
BUILT_LINE = "GLM-5 model:"  # logged at the end of the model's constructor


def server_args(overrides: dict | None) -> list[str]:
    return ["--dtype", "float32"] + ([OVERRIDE_FLAG, json.dumps(overrides)] if overrides is not None else [])


def traced_env() -> dict:
    return {**os.environ, TRACE_INDEXER_ENV: "1"}


class OneServerAtATime:
    """`served(name)` -> the server of that name ("pattern", "all-F" or "none"); starting one stops the others, since
    idle SGLang servers still poll and three of them slowed each start here (2 cores) by minutes."""

    OVERRIDES = {"pattern": {"index_topk_pattern": PATTERN}, "all-F": {"index_topk_pattern": "F" * 4}, "none": None}

    def __init__(self, checkpoint, log_dir):
        self.checkpoint, self.log_dir = checkpoint, log_dir
        self.name, self.server = None, None

    def __call__(self, name: str) -> ServerProcess:
        if name != self.name:
            self.stop()
            log = self.log_dir / f"indexcache-{name}.log"
            args = server_args(self.OVERRIDES[name])
            self.server = ServerProcess(self.checkpoint, log, args, env=traced_env()).start()
            self.name = name
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.name, self.server = None, None


REFUSED_AT_START_UP = "length-5"  # one case through launch_server (a refused start costs ~30-50 s of spawning here)


@pytest.fixture(scope="module")
def refused_at_start_up(tiny_checkpoint, server_log_dir):
    """launch_server with a malformed pattern; `served` starts it before its first server, so the refusal's imports
    run on the second core meanwhile; test_malformed_pattern_refused_at_start_up waits for it."""
    log = server_log_dir / f"indexcache-malformed-{REFUSED_AT_START_UP}.log"
    server = ServerProcess(tiny_checkpoint("bf16"), log, server_args(MALFORMED[REFUSED_AT_START_UP][0]))
    with servers_started_together({REFUSED_AT_START_UP: server}):
        yield server


@pytest.fixture(scope="module")
def served(tiny_checkpoint, server_log_dir, refused_at_start_up):
    servers = OneServerAtATime(tiny_checkpoint("bf16"), server_log_dir)
    yield servers
    servers.stop()


def generate(url: str, ids: list[int], max_new_tokens: int) -> list[int]:
    return load_client.generate(url, ids, max_new_tokens, timeout_s=REQUEST_TIMEOUT_S)["output_ids"]


def indexer_calls(server: ServerProcess) -> Counter:
    return Counter(int(m.group(1)) for m in CALL_LINE.finditer(server.log_path.read_text()))


def indexer_types(pattern: str) -> tuple[str, ...]:
    return tuple("full" if c == "F" else "shared" for c in pattern)


@pytest.mark.slow
def test_pattern_decides_which_layers_run_the_indexer(served, tiny_checkpoint):
    server = served("pattern")
    before = indexer_calls(server)
    generate(server.url, prompt_ids(41, vocab_size(tiny_checkpoint("bf16"))), max_new_tokens=4)
    calls = indexer_calls(server) - before
    full = [i for i, c in enumerate(PATTERN) if c == "F"]
    assert sorted(calls) == full, f"indexer ran on layers {sorted(calls)}, pattern {PATTERN} says {full}"
    assert len(set(calls.values())) == 1 and min(calls.values()) >= 4, f"one prefill + 3 decodes per F layer: {calls}"
    log = server.log_path.read_text()
    assert f"IndexCache: 2 F / 2 S, indexer FLOPs -50% (from {OVERRIDE_FLAG} index_topk_pattern)" in log
    assert f"GLM-5 DSA index-K store: model (CPU default: model-dtype keys, HF transformers' unquantized indexer), layers {full}," in log


@pytest.mark.slow
@pytest.mark.parametrize("length", PROMPT_LENGTHS, ids=lambda n: f"L{n}-{PATTERN}")
def test_pattern_matches_hf_with_same_indexer_types(served, tiny_checkpoint, length):
    checkpoint = tiny_checkpoint("bf16")
    vocab = vocab_size(checkpoint)
    ids = prompt_ids(length, vocab)
    server = served("pattern")
    ours = server_logprobs(server.url, ids, vocab)
    theirs = hf_logprobs(checkpoint, ids, indexer_types(PATTERN)).double()
    assert not ours.isnan().any(), "the server returned fewer than vocab_size logprobs for some position"
    diff = (ours - theirs).abs().max().item()
    assert diff <= LOGPROB_ATOL, f"max |logprob diff| {diff:.3g} > {LOGPROB_ATOL}"
    assert generate(server.url, ids, GREEDY_TOKENS) == hf_greedy(
        checkpoint, ids, GREEDY_TOKENS, indexer_types(PATTERN)
    )


@pytest.mark.slow
def test_pattern_changes_the_output(served, tiny_checkpoint):
    """Guards the parity test above: on this checkpoint the S layers' reuse is visible in the logprobs."""
    checkpoint = tiny_checkpoint("bf16")
    ids = prompt_ids(77, vocab_size(checkpoint))
    diff = (hf_logprobs(checkpoint, ids, indexer_types(PATTERN)) - hf_logprobs(checkpoint, ids)).abs().max().item()
    assert diff > 10 * LOGPROB_ATOL, f"pattern {PATTERN} moves logprobs by only {diff:.3g}"


@pytest.mark.slow
def test_all_full_pattern_equals_no_pattern(served, tiny_checkpoint):
    checkpoint = tiny_checkpoint("bf16")
    vocab = vocab_size(checkpoint)
    ids = prompt_ids(PROMPT_LENGTHS[-1], vocab)
    all_f = served("all-F")
    all_f_tokens, all_f_logprobs = generate(all_f.url, ids, GREEDY_TOKENS), server_logprobs(all_f.url, ids, vocab)
    none = served("none")  # stops the all-F server
    assert all_f_tokens == generate(none.url, ids, GREEDY_TOKENS)
    assert all_f_logprobs.equal(server_logprobs(none.url, ids, vocab))


MALFORMED = {
    "length-5": ({"index_topk_pattern": "FSSFF"}, ["index_topk_pattern has 5 characters", "4 decoder layers"]),
    "char-X-at-2": ({"index_topk_pattern": "FSXF"}, ["index_topk_pattern position 2 is 'X'"]),
    "first-S": ({"index_topk_pattern": "SFFF"}, ["index_topk_pattern position 0 is 'S'"]),
    "conflicts-freq": (
        {"index_topk_pattern": PATTERN, "index_topk_freq": 1},
        ["index_topk_pattern conflicts with index_topk_freq=1 / index_skip_topk_offset=2 at position 1"],
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_pattern_refused_before_the_model_is_built(name, tiny_checkpoint):
    """The check `glm5_config_of` runs in the scheduler before building the model, on every malformed case."""
    overrides, fragments = MALFORMED[name]
    with pytest.raises(Glm5ConfigError) as err:
        Glm5Config.from_pretrained(tiny_checkpoint("bf16"), overrides=overrides)
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.slow
def test_malformed_pattern_refused_at_start_up(refused_at_start_up):
    _, fragments = MALFORMED[REFUSED_AT_START_UP]
    log = refused_at_start_up.log_path
    with pytest.raises(ServerStartError) as err:
        refused_at_start_up.wait_ready()
    for fragment in fragments:
        assert fragment in str(err.value)
    assert OVERRIDE_FLAG in str(err.value), "the error names where the pattern came from"
    assert BUILT_LINE not in log.read_text(), "the model was built before the pattern was refused"
