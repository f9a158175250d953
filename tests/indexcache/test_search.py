"""The greedy IndexCache search on a 6-layer tiny GLM-5 (CPU, HF transformers' forward as the calibration model)."""

import itertools
import json
import random

import pytest
import torch

from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint
from sglang_glm5.cli import main
from sglang_glm5.indexcache.calibration import calibration_batches, load_hf_model
from sglang_glm5.indexcache.plan import IndexerPlan
from sglang_glm5.indexcache.search import CalibrationModel, greedy_search
from tests.oracle import dequantized_copy, hf_model, tokenizer

NUM_LAYERS = 5
INDEX_TOPK = 8  # well under SEQ_LEN: every S layer's reuse changes which keys it attends
SEQ_LEN = 40
MAX_TOKENS = 40
TARGET_F = 3
WORDS = ["the", "model", "reads", "a", "long", "document", "and", "answers", "questions", "about", "the", "people", "places", "and", "dates", "it", "names"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny6") / "bf16", dtype="bf16", num_layers=NUM_LAYERS, index_topk=INDEX_TOPK
    )


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(400)))
    return path


@pytest.fixture(scope="module")
def calibration(checkpoint, calib):
    batches = calibration_batches(tokenizer(checkpoint), calib, SEQ_LEN, MAX_TOKENS, "cpu")
    return CalibrationModel(load_hf_model(checkpoint, torch.float32, "cpu"), batches)


def hf_loss(checkpoint, pattern: str, batches) -> float:
    model = hf_model(checkpoint, tuple("full" if c == "F" else "shared" for c in pattern))
    losses = [model(ids, labels=ids, use_cache=False).loss.item() for ids in batches]
    return sum(losses) / len(losses)  # equal-length sequences: the per-token mean


@pytest.mark.parametrize("pattern", ["FFFFF", "FSSFS"])
def test_switching_indexers_equals_hf_built_with_indexer_types(calibration, checkpoint, pattern):
    ours = calibration.loss(pattern)
    theirs = hf_loss(checkpoint, pattern, calibration.batches)
    assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-5)


def test_patterns_change_the_loss(calibration):
    """Guards the comparison below: on this checkpoint S layers change the calibration loss."""
    assert abs(calibration.loss("FSSSS") - calibration.loss("FFFFF")) > 1e-3


@pytest.mark.slow
def test_search_no_worse_than_a_random_pattern(calibration):
    steps = greedy_search(calibration, TARGET_F, progress=False)
    found = steps[-1]
    IndexerPlan(found.pattern, "test")
    assert [s.num_full for s in steps] == list(range(NUM_LAYERS, TARGET_F - 1, -1))
    assert found.pattern.count("F") == TARGET_F and found.pattern[0] == "F"
    assert found.loss == pytest.approx(calibration.loss(found.pattern), rel=1e-6)
    # Every pattern with TARGET_F F layers (layer 0 is always F): a uniformly random one's expected loss.
    others = [
        "".join("F" if i == 0 or i in chosen else "S" for i in range(NUM_LAYERS))
        for chosen in itertools.combinations(range(1, NUM_LAYERS), TARGET_F - 1)
    ]
    losses = {p: calibration.loss(p) for p in others}
    mean = sum(losses.values()) / len(losses)
    rank = sorted(losses.values()).index(losses[found.pattern])
    assert found.loss <= mean, f"search {found.loss:.4f} > random mean {mean:.4f} (rank {rank}/{len(losses)})"


def test_cli_writes_pattern_steps_and_plot(checkpoint, calib, tmp_path, capsys):
    out = tmp_path / "search" / "pattern.txt"
    argv = ["indexcache", "search", "--model-path", str(checkpoint), "--calib", str(calib), "--remove-fraction",
            "0.2", "--seq-len", str(SEQ_LEN), "--max-tokens", str(SEQ_LEN), "-o", str(out)]
    assert main(argv) == 0
    pattern = out.read_text().strip()
    steps = json.loads(out.with_suffix(".steps.json").read_text())
    assert pattern == steps[-1]["pattern"] and pattern.count("S") == 1 and len(pattern) == NUM_LAYERS
    assert out.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
    assert f'--json-model-override-args \'{{"index_topk_pattern": "{pattern}"}}\'' in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--target-f", "0"], "--target-f must be in [1, 5]"),
        (["--remove-fraction", "1.0"], "--remove-fraction must be in [0, 1)"),
        (["--target-f", "2", "--seq-len", "100000"], "fewer than one sequence of --seq-len 100000"),
    ],
    ids=["target-f-0", "remove-all", "calib-too-short"],
)
def test_cli_rejects_bad_arguments(checkpoint, calib, tmp_path, capsys, extra, message):
    argv = ["indexcache", "search", "--model-path", str(checkpoint), "--calib", str(calib), "-o", str(tmp_path / "p")]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_fp8_checkpoint_dequantized_like_the_oracle(tmp_path, calib):
    fp8 = write_tiny_checkpoint(tmp_path / "fp8", dtype="fp8", num_layers=2, index_topk=INDEX_TOPK)
    oracle = dequantized_copy(fp8, tmp_path / "oracle")
    ours = load_hf_model(fp8, torch.float32, "cpu")
    ids = calibration_batches(tokenizer(fp8), calib, SEQ_LEN, SEQ_LEN, "cpu")[0]
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, hf_model(oracle)(ids).logits)
