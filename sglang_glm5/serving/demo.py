"""`sglang-glm5 demo`: tiny GLM-5 checkpoint -> SGLang server on CPU with our model -> one chat completion -> stop."""

import argparse
import json
from pathlib import Path

import requests

from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint
from sglang_glm5.serving.process import ServerProcess

DEMO_PROMPT = "Write a haiku about sparse attention."
REQUEST_TIMEOUT_S = 300


def run(args: argparse.Namespace) -> int:
    work = Path(args.workdir)
    checkpoint = work / f"tiny-glm5-{args.dtype}"
    if not (checkpoint / "config.json").is_file():
        write_tiny_checkpoint(checkpoint, dtype=args.dtype)
    with ServerProcess(checkpoint, work / "server.log") as server:
        print(f"server ready at {server.url} (log: {server.log_path})", flush=True)
        response = requests.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": "default",
                "messages": [{"role": "user", "content": args.prompt}],
                "max_tokens": args.max_tokens,
                "temperature": 0,
            },
            timeout=REQUEST_TIMEOUT_S,
        )
        response.raise_for_status()
        body = response.json()
    message = body["choices"][0]["message"]
    print(json.dumps({"prompt": args.prompt, "message": message, "usage": body["usage"]}, indent=2, ensure_ascii=False))
    print("(random tiny weights: the answer is gibberish by design; the path to it is the real one)")
    print(f"server stopped with exit code {server.returncode}")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="serve a tiny GLM-5 on CPU through launch_server and ask it one chat question")
    parser.add_argument("--workdir", default="tiny-glm5-demo", help="where the checkpoint and server log go")
    parser.add_argument("--dtype", choices=("bf16", "fp8"), default="bf16")
    parser.add_argument("--prompt", default=DEMO_PROMPT)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.set_defaults(func=run)
