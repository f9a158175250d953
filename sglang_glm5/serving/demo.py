"""`sglang-glm5 demo`: a tiny GLM-5 trained briefly on a few chats -> SGLang server on CPU with our model and parsers
-> one chat question through the official OpenAI client, its reasoning and answer printed apart as they stream -> stop.

The checkpoint is built and trained once (`demo_chats.json`, a bounded number of steps with a progress bar) and
cached in the work directory; a changed chat file or training setting builds it again.
"""

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from sglang_glm5.checkpoint.chat_corpus import Chat, ChatCorpus
from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint
from sglang_glm5.checkpoint.train import TrainConfig, train_checkpoint
from sglang_glm5.datafiles import read_json_object
from sglang_glm5.serving.process import ServerProcess

CHATS_FILE = "demo_chats.json"
TRAIN_STEPS = 40  # the chats are memorized by ~25 steps (loss < 0.05)
TRAIN_LR = 3e-3
DENSE_INDEX_TOPK = 2048  # above every chat's length: the indexer keeps every token, training and serving alike
STAMP_FILE = "demo-trained.json"
REQUEST_TIMEOUT_S = 300
SERVER_FLAGS = ("--reasoning-parser", "glm5", "--tool-call-parser", "glm5")


class DemoError(ValueError):
    pass


def demo_chats() -> list[Chat]:
    path = Path(str(resources.files("sglang_glm5.serving").joinpath(CHATS_FILE)))
    data = read_json_object(path, DemoError)
    try:
        return [Chat(**chat) for chat in data["chats"]]
    except (KeyError, TypeError) as e:
        raise DemoError(f"{path}: each chat needs exactly 'user', 'reasoning' and 'answer' ({e})") from None


def trained_checkpoint(work: Path, dtype: str, steps: int, chats: list[Chat]) -> Path:
    """The demo checkpoint in `work`, built and trained unless the cached one has the same chats and settings."""
    checkpoint = work / f"tiny-glm5-{dtype}-chats"
    recipe = {"dtype": dtype, "steps": steps, "lr": TRAIN_LR, "index_topk": DENSE_INDEX_TOPK,
              "chats": [asdict(c) for c in chats]}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    stamp = checkpoint / STAMP_FILE
    if stamp.is_file() and json.loads(stamp.read_text()).get("recipe") == digest:
        print(f"using the cached checkpoint {checkpoint}", flush=True)
        return checkpoint
    stamp.unlink(missing_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its load report lists the MTP layer, trained separately, as "unexpected"
    write_tiny_checkpoint(checkpoint, dtype=dtype, index_topk=DENSE_INDEX_TOPK)
    corpus = ChatCorpus(checkpoint, chats)
    cfg = TrainConfig(steps=steps, batch=len(chats), seq_len=corpus.longest, lr=TRAIN_LR)
    losses = train_checkpoint(checkpoint, cfg, corpus=corpus)
    stamp.write_text(json.dumps({"recipe": digest, "losses": losses}, indent=2) + "\n")
    return checkpoint


def stream_answer(url: str, prompt: str, max_tokens: int, out=sys.stdout) -> dict:
    """Ask through the OpenAI client; print reasoning and answer apart, each delta as it arrives."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)
    stream = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    section, result = None, {"reasoning": "", "content": "", "finish_reason": None, "usage": None}
    for chunk in stream:
        if chunk.usage:
            result["usage"] = chunk.usage.model_dump(exclude_none=True)
        for choice in chunk.choices:
            for kind, text in (("reasoning", getattr(choice.delta, "reasoning_content", None)),
                               ("content", choice.delta.content)):
                if not text:
                    continue
                if section != kind:
                    out.write(f"\n--- {'reasoning (streamed as generated)' if kind == 'reasoning' else 'answer'} ---\n")
                    section = kind
                out.write(text)
                out.flush()
                result[kind] += text
            result["finish_reason"] = choice.finish_reason or result["finish_reason"]
    out.write("\n")
    return result


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    work = Path(args.workdir)
    try:
        checkpoint = trained_checkpoint(work, args.dtype, args.train_steps, demo_chats())
    except DemoError as e:
        print(f"sglang-glm5 demo: error: {e}", file=sys.stderr)
        return 2
    with ServerProcess(checkpoint, work / "server.log", SERVER_FLAGS) as server:
        print(f"server ready at {server.url} (log: {server.log_path})", flush=True)
        print(f"question: {args.prompt}", flush=True)
        result = stream_answer(server.url, args.prompt, args.max_tokens)
    print(json.dumps({"finish_reason": result["finish_reason"], "usage": result["usage"]}, ensure_ascii=False))
    print(f"(a {checkpoint.name} trained {args.train_steps} steps on {CHATS_FILE}: it recalls those chats, nothing "
          "more; the path to the answer is the real one)")
    print(f"server stopped with exit code {server.returncode}; demo took {time.monotonic() - started:.0f} s")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="train a tiny GLM-5 briefly, serve it on CPU through launch_server, stream one chat answer")
    parser.add_argument("--workdir", default="tiny-glm5-demo", help="where the checkpoint and server log go")
    parser.add_argument("--dtype", choices=("bf16", "fp8"), default="bf16")
    parser.add_argument("--prompt", default=None, help="the question (default: the first chat's)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS, help="training steps (cached per value)")
    parser.set_defaults(func=_with_default_prompt)


def _with_default_prompt(args: argparse.Namespace) -> int:
    if args.prompt is None:
        args.prompt = demo_chats()[0].user
    return run(args)
