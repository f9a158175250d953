"""Long context at GLM-5's index_topk 2048 (the `long` arch: tiny dims, 32k context), served by launch_server with
chunked prefill smaller than the prompt and page size 64, against HF transformers (its prefill fed in chunks through
its own KV cache, the same per-row math as one forward). Every row's logprobs must be within 1e-4 of HF's. A row
whose 2048th and 2049th index scores tie in float32 in some layer (gap under one float32 rounding of the largest terms
that sum to them, `oracle.TIE_GAP`; at 8k one such row, gap 0.06 roundings but over the 3e-6
relative cut used before, flipped and moved a
logprob by 7e-3) selects a key set the math does not determine: any summation order may pick either boundary key.
Such a row (at most 10% of rows; 4% at 8k) must be within 1e-4 of HF's row or of HF's row with that tie broken the
other way (HF's own selection with the two boundary keys swapped: `oracle.hf_chunked(swap_ties=True)`).

Prompts of 3k, 8k and 16k random token ids: every query past position 2048 selects 2048 of its keys, top-k runs over
up to 16k keys, the indexer's logits budget splits the work. A second request sharing a 6k-token prefix (a radix-cache
hit, page-aligned) gives the tokens it gives without the cache; EAGLE at 8k equals plain decoding.
"""

import functools
import os

import pytest
import requests
import torch

from sglang_glm5.checkpoint.archs import get_arch
from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint
from bench.lib import load_client
from sglang_glm5.serving.process import ServerProcess
from tests.models.test_hf_parity import LOGPROB_ATOL, prompt_ids, vocab_size
from tests.oracle import hf_chunked

ARCH = get_arch("long")
PAGE_SIZE = 64
CHUNKED_PREFILL = 1536  # smaller than every prompt; not a multiple of the page size
HF_CHUNK = 512  # HF's dense [chunk, H, T] index scores and their ReLU copy: ~1 GiB at 16k (1024: ~2 GiB, same CPU time)
LENGTHS = (3001, 8191, 16385)  # odd: the last page is partial
GREEDY_TOKENS = {3001: 8, 8191: 8, 16385: 3}  # 16k: prefill and a few decode steps (CI time)
LOGPROB_WINDOW = {3001: 1200, 8191: 160, 16385: 64}  # last positions compared; 3k's spans a chunk boundary
MAX_TIE_FRACTION = 0.1  # rows whose 2048th/2049th index scores tie in float32 (HF-side gap < oracle.TIE_GAP)
SHARED_PREFIX = 6000
SUFFIX = 301
REQUEST_TIMEOUT_S = 1200
SERVER_FLAGS = [
    "--dtype", "float32", "--page-size", str(PAGE_SIZE), "--chunked-prefill-size", str(CHUNKED_PREFILL),
    "--max-total-tokens", "40000", "--context-length", str(ARCH.dims["max_position_embeddings"]),
]
EAGLE_FLAGS = [
    "--speculative-algorithm", "EAGLE", "--speculative-num-steps", "3",
    "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "4",
]

FULL_ENV = "SGLANG_GLM5_LONG_TESTS"  # "1": also the 8k and 16k prompts, the 6k radix hit and EAGLE at 8k
CI_LENGTH = LENGTHS[0]
full_only = pytest.mark.skipif(
    os.environ.get(FULL_ENV) != "1",
    reason=f"8k/16k prefills take minutes each on CI's 2 cores (CI runs the 3k case): set {FULL_ENV}=1 to run",
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("long-bf16"), dtype="bf16", arch=ARCH.name)


@pytest.fixture(scope="module")
def oracle(checkpoint):
    """(length, swap_ties) -> (HF logprobs of the last LOGPROB_WINDOW positions, HF greedy tokens, tie rows), each
    computed once."""

    @functools.cache
    def get(length: int, swap_ties: bool = False):
        ids = prompt_ids(length, vocab_size(checkpoint))
        start = length - LOGPROB_WINDOW[length]
        return hf_chunked(checkpoint, ids, GREEDY_TOKENS[length], HF_CHUNK, start, swap_ties=swap_ties)

    return get


@pytest.fixture(scope="module")
def server(checkpoint, server_log_dir):
    with ServerProcess(checkpoint, server_log_dir / "long-context.log", SERVER_FLAGS) as server:
        yield server


def generate(url: str, ids: list[int], max_new_tokens: int, logprob_from: int | None = None, vocab: int = 0) -> dict:
    payload = {"input_ids": ids, "sampling_params": load_client.greedy(max_new_tokens)}
    if logprob_from is not None:
        payload.update(return_logprob=True, logprob_start_len=logprob_from, top_logprobs_num=vocab)
    response = requests.post(f"{url}/generate", json=payload, timeout=REQUEST_TIMEOUT_S)
    response.raise_for_status()
    return response.json()


def window_logprobs(meta: dict, rows: int, vocab: int):
    window = meta["input_top_logprobs"][1:] + meta["output_top_logprobs"][:1]  # row i predicts the next token
    assert len(window) == rows
    out = torch.full((rows, vocab), float("nan"), dtype=torch.float64)
    for i, row in enumerate(window):
        for logprob, token, _ in row:
            out[i, token] = logprob
    return out


@pytest.mark.parametrize(
    "length",
    [n if n == CI_LENGTH else pytest.param(n, marks=full_only) for n in LENGTHS],
    ids=lambda n: f"L{n}-topk{ARCH.index_topk}",
)
def test_long_prompt_matches_hf(server, checkpoint, oracle, length):
    vocab = vocab_size(checkpoint)
    ids = prompt_ids(length, vocab)
    start = length - LOGPROB_WINDOW[length]
    out = generate(server.url, ids, GREEDY_TOKENS[length], start, vocab)
    hf_rows, hf_tokens, ties = oracle(length)
    ours = window_logprobs(out["meta_info"], LOGPROB_WINDOW[length], vocab)
    assert not ours.isnan().any(), "the server returned fewer than vocab_size logprobs for some position"
    assert out["output_ids"] == hf_tokens
    assert ties.float().mean() <= MAX_TIE_FRACTION, f"{int(ties.sum())} of {len(ties)} rows are top-k ties"
    diff = (ours - hf_rows.double()).abs().amax(-1)  # [rows]
    if (diff[ties] > LOGPROB_ATOL).any():  # a tie's key set is not set by the math: either way of breaking it is HF's
        swapped = (ours - oracle(length, swap_ties=True)[0].double()).abs().amax(-1)
        diff = torch.where(ties, torch.minimum(diff, swapped), diff)
    assert diff.max().item() <= LOGPROB_ATOL, (
        f"max |logprob diff| {diff.max().item():.3g} > {LOGPROB_ATOL} at row {int(diff.argmax())} of the last"
        f" {len(ours)} positions ({int(ties.sum())} top-k-tie rows held to either way of breaking the tie)"
    )


@full_only
def test_radix_hit_on_a_6k_prefix_gives_the_uncached_tokens(server, checkpoint):
    vocab = vocab_size(checkpoint)
    prefix = prompt_ids(SHARED_PREFIX, vocab)
    first, second = prefix + prompt_ids(SUFFIX, vocab), prefix + prompt_ids(SUFFIX + 2, vocab)[2:][::-1]
    assert first[SHARED_PREFIX] != second[SHARED_PREFIX]
    requests.post(f"{server.url}/flush_cache", timeout=60).raise_for_status()
    uncached = load_client.generate(server.url, second, 8, timeout_s=REQUEST_TIMEOUT_S)
    requests.post(f"{server.url}/flush_cache", timeout=60).raise_for_status()
    load_client.generate(server.url, first, 1, timeout_s=REQUEST_TIMEOUT_S)
    cached = load_client.generate(server.url, second, 8, timeout_s=REQUEST_TIMEOUT_S)
    assert uncached["meta_info"]["cached_tokens"] == 0
    assert cached["meta_info"]["cached_tokens"] >= SHARED_PREFIX // PAGE_SIZE * PAGE_SIZE
    assert cached["output_ids"] == uncached["output_ids"]


@full_only
def test_eagle_at_8k_equals_plain_decoding(server, checkpoint, server_log_dir):
    length, tokens = LENGTHS[1], 16
    ids = prompt_ids(length, vocab_size(checkpoint))
    plain = load_client.generate(server.url, ids, tokens, timeout_s=REQUEST_TIMEOUT_S)["output_ids"]
    server.stop()  # one server alive at a time on CI's 2 cores
    with ServerProcess(checkpoint, server_log_dir / "long-context-eagle.log", SERVER_FLAGS + EAGLE_FLAGS) as eagle:
        assert load_client.generate(eagle.url, ids, tokens, timeout_s=REQUEST_TIMEOUT_S)["output_ids"] == plain
