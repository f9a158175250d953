"""`bench speed` builds the cookbook's bench_serving command; the run itself is in test_server_e2e.py."""

import sys

from sglang_glm5.eval import speed
from sglang_glm5.eval.cookbook import cookbook


def flag_values(command: list[str]) -> dict[str, str]:
    words = command[3:]
    return dict(zip(words[::2], words[1::2]))


def test_cookbook_profiles_are_its_commands():
    profiles = cookbook().speed_profiles
    common = {"--backend": "sglang", "--dataset-name": "random", "--random-input-len": "1000",
              "--random-output-len": "1000", "--request-rate": "inf"}
    assert profiles["latency"] == {**common, "--num-prompts": "10", "--max-concurrency": "1"}
    assert profiles["throughput"] == {**common, "--num-prompts": "1000", "--max-concurrency": "100"}


def test_overrides_replace_profile_values_and_extra_goes_last(tmp_path):
    flags = speed.merged_flags(cookbook().speed_profiles["throughput"], {"--num-prompts": 7, "--tokenizer": None})
    command = speed.bench_command(flags, "http://h:1", ["--seed", "3"], tmp_path / "o.jsonl")
    assert command[:3] == [sys.executable, "-m", "sglang.benchmark.serving"]
    assert command[-2:] == ["--seed", "3"]
    values = flag_values(command[:-2])
    assert values["--num-prompts"] == "7" and values["--max-concurrency"] == "100" and "--tokenizer" not in values
    assert values["--base-url"] == "http://h:1" and values["--output-file"] == str(tmp_path / "o.jsonl")
