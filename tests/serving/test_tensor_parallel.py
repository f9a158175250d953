"""Tensor parallel GLM-5 through SGLang's real launch_server on CPU (ranks talk over gloo), against HF transformers.

Same oracle and tolerance as TP 1 (tests/models/test_hf_parity.py): float32, next-token logprobs at every prompt
position within 1e-4 and greedy continuations token for token. The tiny model has 4 attention heads: tp 4 gives each
rank one head (and its own slice of q_b/kv_b/o_proj and of the MoE), tp 2 two. Attention DP (tp 2, 2 DP groups)
gives each DP group its own requests and all heads. One server alive at a time (2 cores).
"""

import json
import re
from dataclasses import dataclass

import pytest

from bench.lib import load_client
from sglang_glm5.serving.process import ServerProcess
from tests.models.test_hf_parity import assert_prompt_logprobs_match_hf, prompt_ids, vocab_size
from tests.oracle import dequantized_copy, hf_greedy
from tests.serving.test_eagle import EAGLE_FLAGS

GREEDY_TOKENS = 16
LOGPROB_LENGTH = 77  # > index_topk (16): DSA selects
BATCH_LENGTHS = (41, 130, 23)  # one ragged batch; under attention DP the ranks get 2 and 1 requests
PATTERN = "FSSF"  # IndexCache: layers 1 and 2 reuse the top-k of layer 0
REQUEST_TIMEOUT_S = 300

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Setup:
    dtype: str
    flags: tuple[str, ...]
    pattern: str | None = None

    def indexer_types(self) -> tuple[str, ...] | None:
        return None if self.pattern is None else tuple("full" if c == "F" else "shared" for c in self.pattern)


SETUPS = {
    "bf16-tp4-indexcache": Setup(
        "bf16", ("--tp-size", "4", "--json-model-override-args", json.dumps({"index_topk_pattern": PATTERN})), PATTERN
    ),
    "fp8-tp2-eagle": Setup("fp8", ("--tp-size", "2", *EAGLE_FLAGS)),
    # Attention DP: two DP groups of one rank each (all 4 heads), the MoE tensor parallel over both.
    "bf16-tp2-dp-attention": Setup("bf16", ("--tp-size", "2", "--attn-dp-size", "2")),
}


@pytest.fixture(scope="module", params=list(SETUPS))
def served(request, tiny_checkpoint, server_log_dir, tmp_path_factory):
    """(server, oracle checkpoint, setup); module-scoped params: pytest runs every test of one server before it
    starts the next, so one server is alive at a time."""
    setup = SETUPS[request.param]
    checkpoint = tiny_checkpoint(setup.dtype)
    oracle = checkpoint
    if setup.dtype == "fp8":
        oracle = dequantized_copy(checkpoint, tmp_path_factory.mktemp("oracle") / "fp8-dequantized")
    flags = ["--dtype", "float32", *setup.flags]
    with ServerProcess(checkpoint, server_log_dir / f"tp-{request.param}.log", flags) as server:
        yield server, oracle, setup


def test_prefill_logprobs_match_hf(served):
    """One request: under attention DP the other DP rank is idle (no request) yet joins every MoE step."""
    server, oracle, setup = served
    assert_prompt_logprobs_match_hf(server.url, oracle, LOGPROB_LENGTH, setup.indexer_types())


def test_greedy_batch_matches_hf(served):
    """One ragged batch: TP ranks split its heads; attention-DP ranks split its requests unevenly."""
    server, oracle, setup = served
    batch = [prompt_ids(n, vocab_size(oracle)) for n in BATCH_LENGTHS]
    outputs = load_client.generate(server.url, batch, GREEDY_TOKENS, timeout_s=REQUEST_TIMEOUT_S)
    expected = [hf_greedy(oracle, ids, GREEDY_TOKENS, setup.indexer_types()) for ids in batch]
    assert [o["output_ids"] for o in outputs] == expected
    if "--speculative-algorithm" in setup.flags:
        assert all(o["meta_info"]["spec_verify_ct"] > 0 for o in outputs), "no verify step ran: speculation was off"


def test_every_rank_ran(served):
    """Guards the tests above against a server that silently ran at tp 1."""
    server, _, setup = served
    tp = int(setup.flags[setup.flags.index("--tp-size") + 1])
    log = server.log_path.read_text()
    assert all(f"TP{r}]" in log for r in range(tp)) and f"TP{tp}]" not in log, f"expected ranks TP0..TP{tp - 1}"
    if "--attn-dp-size" in setup.flags:
        # both DP groups scheduled prefills of their own (the batch test gave each at least one request)
        assert all(re.search(rf"DP{r} TP{r}\] Prefill batch", log) for r in range(tp)), "an attention-DP rank never prefilled"
