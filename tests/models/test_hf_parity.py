"""Our GlmMoeDsaForCausalLM, served by SGLang's launch_server on CPU, against HF transformers on the same checkpoint.

Both run in float32 (bf16 rounding would make near-ties flip greedy tokens and swamp a 1e-4 bound). The FP8
checkpoint is dequantized for HF by an independent per-block loop (`oracle.dequantized_copy`).
"""

import random

import pytest
import requests
import torch

from bench.lib import load_client
from sglang_glm5.serving.process import ServerProcess
from tests.conftest import PARITY_INDEX_TOPK
from tests.oracle import dequantized_copy, hf_greedy, hf_logprobs

LOGPROB_ATOL = 1e-4
GREEDY_TOKENS = 32
PROMPT_LENGTHS = (41, 77, 130)  # all > index_topk: DSA selects a strict subset for most positions
FIRST_PLAIN_TOKEN = 3
REQUEST_TIMEOUT_S = 300


def prompt_ids(length: int, vocab: int) -> list[int]:
    rng = random.Random(length)
    return [rng.randrange(FIRST_PLAIN_TOKEN, vocab // 2) for _ in range(length)]


@pytest.fixture(scope="module", params=["bf16", "fp8"])
def served(request, tiny_checkpoint, server_log_dir, tmp_path_factory):
    checkpoint = tiny_checkpoint(request.param)
    oracle_dir = checkpoint
    if request.param == "fp8":
        oracle_dir = dequantized_copy(checkpoint, tmp_path_factory.mktemp("oracle") / "fp8-dequantized")
    with ServerProcess(checkpoint, server_log_dir / f"parity-{request.param}.log", ["--dtype", "float32"]) as server:
        yield server, oracle_dir


def vocab_size(checkpoint) -> int:
    import json

    return json.loads((checkpoint / "config.json").read_text())["vocab_size"]


def server_logprobs(url: str, ids: list[int], vocab: int) -> torch.Tensor:
    """[len(ids), vocab]: the server's next-token log-probabilities at every prompt position."""
    response = requests.post(
        f"{url}/generate",
        json={
            "input_ids": ids,
            "sampling_params": {"max_new_tokens": 1, "temperature": 0},
            "return_logprob": True,
            "logprob_start_len": 0,
            "top_logprobs_num": vocab,
        },
        timeout=REQUEST_TIMEOUT_S,
    )
    response.raise_for_status()
    meta = response.json()["meta_info"]
    rows = meta["input_top_logprobs"][1:] + meta["output_top_logprobs"][:1]  # row i predicts token i+1
    out = torch.full((len(ids), vocab), float("nan"), dtype=torch.float64)
    for i, row in enumerate(rows):
        for logprob, token, _ in row:
            out[i, token] = logprob
    return out


@pytest.mark.slow
@pytest.mark.parametrize("length", PROMPT_LENGTHS, ids=lambda n: f"L{n}-topk{PARITY_INDEX_TOPK}")
def test_prefill_logprobs_match_hf(served, length):
    server, oracle_dir = served
    assert_prompt_logprobs_match_hf(server.url, oracle_dir, length)


@pytest.mark.slow
@pytest.mark.parametrize("length", PROMPT_LENGTHS, ids=lambda n: f"L{n}-greedy{GREEDY_TOKENS}")
def test_greedy_continuation_matches_hf(served, length):
    server, oracle_dir = served
    ids = prompt_ids(length, vocab_size(oracle_dir))
    out = load_client.generate(server.url, ids, GREEDY_TOKENS, timeout_s=REQUEST_TIMEOUT_S)
    assert out["output_ids"] == hf_greedy(oracle_dir, ids, GREEDY_TOKENS)


def assert_prompt_logprobs_match_hf(url: str, oracle_dir, length: int, indexer_types=None) -> None:
    """The server's fp32 next-token logprobs at every position of a `length`-token prompt equal HF's within LOGPROB_ATOL."""
    vocab = vocab_size(oracle_dir)
    ids = prompt_ids(length, vocab)
    ours = server_logprobs(url, ids, vocab)
    theirs = hf_logprobs(oracle_dir, ids, indexer_types).double()
    assert not ours.isnan().any(), "the server returned fewer than vocab_size logprobs for some position"
    diff = (ours - theirs).abs().max().item()
    assert diff <= LOGPROB_ATOL, f"max |logprob diff| {diff:.3g} > {LOGPROB_ATOL}"
