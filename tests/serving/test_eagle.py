"""EAGLE speculative decoding with GLM-5's MTP layer as the draft, served by SGLang's launch_server on CPU.

Lossless: greedy output with the cookbook's EAGLE flags is token-for-token the output without speculation, batch
1 and 4, on a briefly trained tiny checkpoint. Prompts on the training corpus are mostly accepted; prompts of
ordinary text make the draft miss, so both the accept and the reject paths of verify and draft extend run.
"""

import pytest

from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint
from sglang_glm5.checkpoint.train import TrainConfig, corpus_for, train_checkpoint
from bench.lib import load_client
from sglang_glm5.serving.process import ServerProcess

EAGLE_FLAGS = [
    "--speculative-algorithm", "EAGLE", "--speculative-num-steps", "3",
    "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "4",
]
COMMON_FLAGS = ["--dtype", "float32"]  # fp32: a multi-token verify forward and one-token decode agree to the ulp
TRAIN = TrainConfig(steps=30)
GREEDY_TOKENS = 16
CORPUS_PROMPT_TOKENS = (5, 13)
TEXT_PROMPTS = (
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
)
MIN_TRAINED_ACCEPT_LENGTH = 1.5
REQUEST_TIMEOUT_S = 300

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-trained"), dtype="bf16", index_topk=16)
    train_checkpoint(path, TRAIN)
    return path


@pytest.fixture(scope="module")
def prompts(trained) -> list[list[int]]:
    """Token ids: corpus cycles of odd lengths (mostly accepted), then ordinary text (mostly rejected)."""
    from transformers import AutoTokenizer

    corpus = corpus_for(trained, TRAIN)
    on_corpus = [corpus.sequence(int(corpus.tokens[7 * i]), n) for i, n in enumerate(CORPUS_PROMPT_TOKENS)]
    tok = AutoTokenizer.from_pretrained(trained)
    return on_corpus + [tok(text)["input_ids"] for text in TEXT_PROMPTS]


@pytest.fixture(scope="module")
def plain_server(trained, server_log_dir):
    with ServerProcess(trained, server_log_dir / "eagle-off.log", COMMON_FLAGS) as server:
        yield server


@pytest.fixture(scope="module")
def eagle_server(trained, server_log_dir):
    with ServerProcess(trained, server_log_dir / "eagle-on.log", COMMON_FLAGS + EAGLE_FLAGS) as server:
        yield server


def generate(url: str, input_ids: list[list[int]]) -> list[dict]:
    return load_client.generate(url, input_ids, GREEDY_TOKENS, timeout_s=REQUEST_TIMEOUT_S)


PROMPT_IDS = [f"corpus-{n}tok" for n in CORPUS_PROMPT_TOKENS] + [f"text-{i}" for i in range(len(TEXT_PROMPTS))]


@pytest.mark.parametrize("index", range(len(PROMPT_IDS)), ids=PROMPT_IDS)
def test_lossless_batch1(plain_server, eagle_server, prompts, index):
    expected = generate(plain_server.url, [prompts[index]])[0]["output_ids"]
    out = generate(eagle_server.url, [prompts[index]])[0]
    assert out["output_ids"] == expected
    assert out["meta_info"]["spec_verify_ct"] > 0, "no verify step ran: speculation was off"


def test_lossless_batch4(plain_server, eagle_server, prompts):
    batch = prompts[:4]  # 2 corpus + 2 text prompts in one batch
    expected = [o["output_ids"] for o in generate(plain_server.url, batch)]
    assert [o["output_ids"] for o in generate(eagle_server.url, batch)] == expected


def test_both_accept_and_reject_paths_ran(eagle_server, prompts):
    meta = [o["meta_info"] for o in generate(eagle_server.url, prompts)]
    correct = sum(m["spec_num_correct_drafts"] for m in meta)
    proposed = sum(m["spec_num_proposed_drafts"] for m in meta)
    assert 0 < correct < proposed, f"{correct} of {proposed} drafts accepted: one of verify's paths never ran"


def test_trained_draft_is_accepted(eagle_server, prompts):
    corpus = prompts[: len(CORPUS_PROMPT_TOKENS)]
    lengths = [o["meta_info"]["spec_accept_length"] for o in generate(eagle_server.url, corpus)]
    assert min(lengths) > MIN_TRAINED_ACCEPT_LENGTH, lengths
