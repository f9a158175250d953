"""Resolve SGLang's server args for a checkpoint with our plugin loaded (no weights, no server) and print the
resolved CUDA graph backends as JSON: `python -m tests.serving.resolve_graph_config MODEL [flags...]`."""

import argparse
import json
import sys


def main():
    from sglang_glm5.serving.cpu import prepare_this_process

    prepare_this_process()
    from sglang.srt.plugins import load_plugins

    load_plugins()
    from sglang.srt.runtime_context import SpawnRanks, get_exec, publish
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    argv = ["--model-path", sys.argv[1], "--device", "cpu", "--attention-backend", "dsa", *sys.argv[2:]]
    server_args = ServerArgs.from_cli_args(parser.parse_args(argv))
    server_args.resolve_once()
    publish(server_args, role="scheduler", ranks=SpawnRanks(world_rank=0, gpu_id=0))
    config = get_exec().graph.cuda_graph_config
    print(json.dumps({"decode": config.decode.backend, "prefill": config.prefill.backend}))


if __name__ == "__main__":
    main()
