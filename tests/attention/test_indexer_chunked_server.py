"""Through the real server on CPU: with an indexer logits budget of a few query rows, every prefill is scored in
many row chunks, and the prompt logprobs still match HF transformers' GLM-5 (the unchunked oracle)."""

import json
import os
import shutil

import pytest

from sglang_glm5.attention.indexer_workspace import LOGIT_BYTES, MIB
from sglang_glm5.datafiles import CONFIGS_ENV, configs_dir
from sglang_glm5.serving.process import ServerProcess
from tests.models.test_hf_parity import (
    LOGPROB_ATOL,
    prompt_ids,
    server_logprobs,
    vocab_size,
)
from tests.oracle import hf_logprobs

PROMPT_LENGTH = 131
BUDGET_MIB = 0.001  # 1048 B: 2 query rows per pass at 131 keys
ROWS_PER_PASS = int(BUDGET_MIB * MIB) // (LOGIT_BYTES * PROMPT_LENGTH)


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("bf16")


@pytest.fixture(scope="module")
def small_budget_server(checkpoint, server_log_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("small-budget") / "configs"
    shutil.copytree(configs_dir(), root)
    layout = json.loads((root / "memory-layout.json").read_text())
    layout["indexer_workspace"]["logits_budget_mib"] = BUDGET_MIB
    (root / "memory-layout.json").write_text(json.dumps(layout))
    env = {**os.environ, CONFIGS_ENV: str(root)}
    log = server_log_dir / "indexer-chunked.log"
    with ServerProcess(checkpoint, log, ["--dtype", "float32"], env=env) as server:
        yield server, log


@pytest.mark.slow
def test_chunked_prefill_logprobs_match_hf(small_budget_server, checkpoint):
    assert ROWS_PER_PASS == 2  # 66 passes per layer for the prompt
    server, log = small_budget_server
    vocab = vocab_size(checkpoint)
    ids = prompt_ids(PROMPT_LENGTH, vocab)
    ours = server_logprobs(server.url, ids, vocab)
    theirs = hf_logprobs(checkpoint, ids).double()
    assert not ours.isnan().any()
    diff = (ours - theirs).abs().max().item()
    assert diff <= LOGPROB_ATOL, f"max |logprob diff| {diff:.3g} > {LOGPROB_ATOL}"
    assert f"(budget {int(BUDGET_MIB * MIB)} B)" in log.read_text()  # the server read the small budget
