"""EAGLE flags given after `--` get the same per-preset check as `--with eagle`: refused on AMD presets."""

import pytest

from sglang_glm5.cli import main

EAGLE_FLAGS = [
    "--speculative-algorithm", "EAGLE", "--speculative-num-steps", "3",
    "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "4",
]


@pytest.mark.parametrize("preset", ["mi300x-bf16", "mi325x-bf16", "mi355x-bf16"])
def test_raw_eagle_flags_on_amd_are_refused(preset, capsys):
    assert main(["launch", "--preset", preset, "--print-only", "--", *EAGLE_FLAGS]) == 2
    err = capsys.readouterr().err
    assert f"preset {preset} cannot use eagle: EAGLE speculative decoding is not supported for GLM-5 on AMD GPUs" in err


def test_raw_eagle_flags_on_nvidia_pass(capsys):
    assert main(["launch", "--preset", "h200-fp8", "--print-only", "--", *EAGLE_FLAGS]) == 0
    assert "--speculative-algorithm EAGLE" in capsys.readouterr().out


def test_eagle_on_cpu_tiny_composes_the_cookbook_flags():
    from sglang_glm5.presets.catalog import load_catalog
    from sglang_glm5.presets.compose import compose

    options = compose(load_catalog(), "cpu-tiny", ["eagle"], model_path="/ckpt").options
    assert {k: options[k] for k in ("speculative_algorithm", "speculative_num_steps", "speculative_eagle_topk",
                                    "speculative_num_draft_tokens")} == {
        "speculative_algorithm": "EAGLE", "speculative_num_steps": 3, "speculative_eagle_topk": 1,
        "speculative_num_draft_tokens": 4}
