"""EAGLE on the FP8 tiny checkpoint: the MTP draft loads its FP8 block-quantized weights from the same checkpoint
as the target, and speculation stays lossless against HF transformers on the dequantized checkpoint."""

import pytest

from sglang_glm5.serving.process import ServerProcess
from tests.oracle import dequantized_copy, hf_greedy, tokenizer
from tests.serving.test_eagle import COMMON_FLAGS, EAGLE_FLAGS, GREEDY_TOKENS, TEXT_PROMPTS, generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("fp8")


@pytest.fixture(scope="module")
def eagle_server(checkpoint, server_log_dir):
    with ServerProcess(checkpoint, server_log_dir / "eagle-fp8.log", COMMON_FLAGS + EAGLE_FLAGS) as server:
        yield server


def test_fp8_eagle_greedy_matches_hf_on_the_dequantized_checkpoint(checkpoint, eagle_server, tmp_path):
    oracle = dequantized_copy(checkpoint, tmp_path / "fp8-dequantized")
    batch = [tokenizer(checkpoint)(text)["input_ids"] for text in TEXT_PROMPTS]
    outputs = generate(eagle_server.url, batch)
    assert all(o["meta_info"]["spec_verify_ct"] > 0 for o in outputs), "no verify step ran: speculation was off"
    assert [o["output_ids"] for o in outputs] == [hf_greedy(oracle, ids, GREEDY_TOKENS) for ids in batch]
