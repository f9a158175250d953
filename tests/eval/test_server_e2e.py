"""`eval gsm8k`, `eval mmlu`, `bench speed` and `report` end to end against the tiny GLM-5 served on CPU by SGLang's
launch_server (one server for the module), directly and through a faulty network.

The tiny model's weights are random, so accuracy is near zero; what is checked is the path: the answers the JSON
records are the ones the server gives for SGLang's prompts, the metrics follow from the records, faults are retried
and counted, and the report carries the measured figures.
"""

import json

import pytest
import requests

from sglang_glm5.cli import main
from sglang_glm5.eval import gsm8k, mmlu
from sglang_glm5.serving.process import ServerProcess
from tests.eval.conftest import DATA
from tests.eval.faulty_network import FaultyNetwork

pytestmark = pytest.mark.slow

GSM8K_QUESTIONS = 4
GSM8K_SHOTS = 2
MAX_TOKENS = 8
RETRIES = 2


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("bf16")


@pytest.fixture(scope="module")
def server(checkpoint, server_log_dir):
    # float32: answers compared across runs with different batch mates stay bit-stable
    with ServerProcess(checkpoint, server_log_dir / "eval-e2e.log", ["--dtype", "float32"]) as server:
        yield server


def gsm8k_argv(url: str, out, *extra: str) -> list[str]:
    return ["eval", "gsm8k", "--base-url", url, "--data", str(DATA / "gsm8k" / "test.jsonl"),
            "--num-questions", str(GSM8K_QUESTIONS), "--num-shots", str(GSM8K_SHOTS), "--max-tokens", str(MAX_TOKENS),
            "--parallel", "4", "--retries", str(RETRIES), "-o", str(out), *extra]


@pytest.fixture(scope="module")
def gsm8k_result(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "gsm8k.json"
    assert main(gsm8k_argv(server.url, out)) == 0
    return json.loads(out.read_text())


def completion_text(url: str, prompt: str, **body) -> str:
    response = requests.post(f"{url}/v1/completions", timeout=300,
                             json={"model": "default", "prompt": prompt, "temperature": 0, **body})
    response.raise_for_status()
    return response.json()["choices"][0]["text"]


def test_gsm8k_json_records_the_servers_answers(server, checkpoint, gsm8k_result):
    doc = gsm8k_result
    assert doc["task"] == "gsm8k" and doc["model"] == str(checkpoint) and doc["base_url"] == server.url
    assert doc["command"].startswith(f"sglang-glm5 eval gsm8k --base-url {server.url} --api completions")
    assert doc["num_questions"] == GSM8K_QUESTIONS and doc["failed_requests"] == 0 and doc["retried_requests"] == 0
    prompts = gsm8k.build_prompts(DATA / "gsm8k" / "test.jsonl", GSM8K_QUESTIONS, GSM8K_SHOTS)
    records = doc["records"]
    assert [r["label"] for r in records] == prompts.labels
    for prompt, record in zip(prompts.prompts, records):
        text = completion_text(server.url, prompt, max_tokens=MAX_TOKENS, stop=list(gsm8k.STOP))
        assert record["output"] == text and record["error"] is None
        assert record["pred"] == gsm8k.answer_value(text)
    assert doc["accuracy"] == round(sum(r["correct"] for r in records) / len(records), 4)
    assert doc["invalid"] == round(sum(r["pred"] is None for r in records) / len(records), 4)
    assert 0 < doc["output_tokens"] <= GSM8K_QUESTIONS * MAX_TOKENS
    assert doc["output_throughput_tok_s"] == pytest.approx(doc["output_tokens"] / doc["latency_s"], rel=1e-2)


def test_gsm8k_through_faulty_network(server, gsm8k_result, tmp_path):
    """One question meets a 503 and a dropped connection (retried), one a server that keeps failing (counted)."""
    direct = gsm8k_result
    lines = (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()
    # the last words of a question appear only in its own prompt (the first two are also shots)
    flaky, dead = json.loads(lines[2])["question"], json.loads(lines[3])["question"]
    faults = {flaky: ["503", "drop"], dead: ["500"] * (RETRIES + 1)}
    out = tmp_path / "faulty.json"
    with FaultyNetwork(server.url, faults) as network:
        assert main(gsm8k_argv(network.url, out)) == 0
    doc = json.loads(out.read_text())
    records = doc["records"]
    assert [r["attempts"] for r in records] == [1, 1, 3, RETRIES + 1]
    assert doc["failed_requests"] == 1 and doc["retried_requests"] == 2
    assert records[3]["pred"] is None and "gave up after 3 attempts: HTTP 500" in records[3]["error"]
    assert records[3]["output"] is None
    assert [(r["output"], r["pred"]) for r in records[:3]] == [(r["output"], r["pred"]) for r in direct["records"][:3]]
    assert doc["invalid"] >= 0.25


@pytest.mark.parametrize("thinking", ["on", "off"])
def test_gsm8k_chat(server, tmp_path, thinking):
    """Through the chat template; the answer is what follows the template's or the model's </think>."""
    out = tmp_path / "chat.json"
    assert main(gsm8k_argv(server.url, out, "--api", "chat", "--thinking", thinking)) == 0
    doc = json.loads(out.read_text())
    assert f"--api chat --thinking {thinking}" in doc["command"]
    assert doc["failed_requests"] == 0 and len(doc["records"]) == GSM8K_QUESTIONS and doc["output_tokens"] > 0
    prompt = gsm8k.build_prompts(DATA / "gsm8k" / "test.jsonl", 1, GSM8K_SHOTS).prompts[0]
    response = requests.post(f"{server.url}/v1/chat/completions", timeout=300, json={
        "model": "default", "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
        "temperature": 0, "chat_template_kwargs": {"enable_thinking": thinking == "on"},
        **({} if thinking == "on" else {"stop": list(gsm8k.STOP)})})
    content = response.json()["choices"][0]["message"]["content"] or ""
    assert doc["records"][0]["output"] == content.rsplit("</think>", 1)[-1]


def test_thinking_needs_chat_api(server, tmp_path, capsys):
    assert main(gsm8k_argv(server.url, tmp_path / "x.json", "--thinking", "on")) == 2
    assert "--thinking needs --api chat" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mmlu_result(server, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "mmlu.json"
    argv = ["eval", "mmlu", "--base-url", server.url, "--data", str(DATA / "mmlu"), "--shots-tokenizer",
            str(checkpoint), "--parallel", "4", "-o", str(out)]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_mmlu_json(server, checkpoint, mmlu_result):
    doc = mmlu_result
    prompts = mmlu.build_prompts(DATA / "mmlu", None, 5, None, mmlu.shot_token_counter(str(checkpoint)))
    assert doc["task"] == "mmlu" and doc["num_questions"] == len(prompts.prompts) == 5 and doc["failed_requests"] == 0
    records = doc["records"]
    assert [r["subject"] for r in records] == prompts.subjects and [r["label"] for r in records] == prompts.labels
    for prompt, record in zip(prompts.prompts, records):
        text = completion_text(server.url, prompt, max_tokens=mmlu.MAX_TOKENS)
        assert record["output"] == text and record["pred"] == mmlu.answer_letter(text)
    for subject, s in doc["per_subject"].items():
        mine = [r for r in records if r["subject"] == subject]
        assert s["num_questions"] == len(mine) and s["correct"] == sum(r["correct"] for r in mine)
        assert s["shots"] == prompts.shots[subject]
    assert doc["output_tokens"] <= doc["num_questions"]


@pytest.fixture(scope="module")
def speed_result(server, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "speed.json"
    argv = ["bench", "speed", "--base-url", server.url, "--profile", "latency", "--num-prompts", "3",
            "--random-input-len", "32", "--random-output-len", "8", "--dataset-name", "random-ids",
            "--tokenizer", str(checkpoint), "-o", str(out), "--", "--warmup-requests", "1"]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_bench_speed_latency_profile(speed_result, checkpoint):
    doc = speed_result
    raw = doc["bench_serving"]
    assert doc["task"] == "speed" and doc["profile"] == "latency" and doc["model"] == str(checkpoint)
    assert doc["completed"] == doc["num_prompts"] == 3 and doc["failed_requests"] == 0
    command = doc["bench_serving_command"]
    for flag in ("-m sglang.benchmark.serving", "--backend sglang", "--max-concurrency 1", "--request-rate inf",
                 "--num-prompts 3", "--random-output-len 8", "--dataset-name random-ids", "--warmup-requests 1"):
        assert flag in command
    assert raw["max_concurrency"] == 1 and raw["completed"] == 3
    assert doc["output_throughput_tok_s"] == raw["output_throughput"] > 0
    assert doc["mean_tpot_ms"] == raw["mean_tpot_ms"] > 0 and doc["mean_ttft_ms"] == raw["mean_ttft_ms"] > 0
    assert doc["output_tokens"] == raw["total_output_tokens"] > 0


def test_report_of_real_runs(gsm8k_result, mmlu_result, speed_result, tmp_path):
    paths = []
    for name, doc in {"gsm8k.json": gsm8k_result, "mmlu.json": mmlu_result, "speed.json": speed_result}.items():
        (tmp_path / name).write_text(json.dumps(doc))
        paths.append(str(tmp_path / name))
    assert main(["report", *paths, "-o", str(tmp_path / "report.md")]) == 0
    text = (tmp_path / "report.md").read_text()
    assert f"| `mmlu.json` | mmlu | accuracy | {mmlu_result['accuracy']:.3f} | 0.877 |" in text
    assert f"| `gsm8k.json` | gsm8k | accuracy | {gsm8k_result['accuracy']:.3f} | 0.955 |" in text
    assert "| `speed.json` | speed latency | mean TPOT (ms) |" in text
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
