"""One checkpoint's load timings, in a fresh process (`python -m bench.lib.load_worker`), called by weight_loading.py.

(a) SGLang's own scheduler load path, in process: a `ModelRunner` is built once as the server's scheduler builds it
    (server args from `sglang-glm5 serve`'s CPU defaults), then `ModelRunner.load_model()` is run again per repeat
    on a dropped model: a fresh model is constructed and filled through DefaultModelLoader -> our `load_weights`.
    `ModelRunner.weight_load_time` is the number SGLang logs as `Load weight end. elapsed=`.
(b) the iterator DefaultModelLoader hands to `model.load_weights` (`loader._get_all_weights`), consumed alone:
    "page" reads one byte per 4 KiB page of every tensor (safetensors tensors are lazy mmap views, so this is all the
    iterator itself costs); "copy" copies every tensor into fresh process memory and keeps the copies until the pass
    ends, as a model keeps its parameters (the one copy any loader must make, at the model's memory footprint).
(a) and (b) repeats are interleaved, so load from other jobs on the machine hits both alike; the previous model is
dropped before each baseline pass, so every pass starts with the same memory in use.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import json
import pstats
import sys
import time
from pathlib import Path

PAGE_BYTES = 4096
TOUCH_MODES = ("page", "copy")
READ_CHUNK = 64 << 20
PROFILE_TOP = 25
ITERATOR_NAMES = (
    "buffered_multi_thread_safetensors_weights_iterator",
    "safetensors_weights_iterator",
    "fastsafetensors_weights_iterator",
)


def warm_page_cache(files: list[Path]) -> int:
    """Read every file once, so both (a) and (b) run from the page cache."""
    total = 0
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(READ_CHUNK):
                total += len(chunk)
    return total


def touch(tensor, mode: str):
    """What a baseline pass does with one tensor; returns what it must keep alive until the pass ends."""
    import torch

    flat = tensor.reshape(-1).view(torch.uint8)
    if mode == "page":
        flat[::PAGE_BYTES].sum()
        return None
    if mode == "copy":
        return flat.clone()
    raise ValueError(f"touch mode must be one of {TOUCH_MODES}, got {mode!r}")


def prepare_process() -> None:
    """CPU environment and SGLang plugins (our model, backend, CPU hooks): before anything imports SGLang."""
    from sglang_glm5.serving.cpu import prepare_this_process

    prepare_this_process()
    from sglang.srt.plugins import load_plugins

    load_plugins()


def build_runner(checkpoint: Path, extra_args: list[str]):
    """A ModelRunner built like the server's scheduler builds it (and like `sglang.benchmark.one_batch.load_model`)."""
    from sglang.benchmark.one_batch import _init_process_global_configs
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.distributed import bootstrap
    from sglang.srt.entrypoints.engine import _set_envs_and_config
    from sglang.srt.model_executor.model_runner import ModelRunner
    from sglang.srt.runtime_context import (
        SpawnRanks,
        get_device,
        publish,
        spawn_world_rank,
    )
    from sglang.srt.server_args import PortArgs, ServerArgs

    from sglang_glm5.serving.cpu import with_cpu_defaults

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    server_args = ServerArgs.from_cli_args(
        parser.parse_args(with_cpu_defaults(["--model-path", str(checkpoint), *extra_args]))
    )
    server_args.resolve_once()
    _set_envs_and_config(server_args)
    port_args = PortArgs.init_new(server_args)
    world_rank = spawn_world_rank(server_args, tp_rank=0, pp_rank=0)
    publish(server_args, role="scheduler", ranks=SpawnRanks(world_rank=world_rank, gpu_id=0))
    _init_process_global_configs()
    model_config = ModelConfig.from_server_args(server_args)
    bootstrap.init_parallel_runtime(server_args=server_args, device=get_device().device, dist_port=port_args.nccl_port)
    bootstrap.init_layer_runtime(model_config=model_config)
    return ModelRunner(
        model_config=model_config,
        mem_fraction_static=server_args.mem_fraction_static,
        gpu_id=0,
        nccl_port=port_args.nccl_port,
        server_args=server_args,
    )


def instrument_loader(load_weights_s: list[float], iterators: list[str]) -> None:
    """Time DefaultModelLoader.load_weights_and_postprocess (model.load_weights + postprocess, without building the
    model) and record which safetensors iterator SGLang picked."""
    from sglang.srt.model_loader import loader

    original = loader.DefaultModelLoader.load_weights_and_postprocess

    def timed(model, weights, target_device):
        t0 = time.perf_counter()
        original(model, weights, target_device)
        load_weights_s.append(time.perf_counter() - t0)

    loader.DefaultModelLoader.load_weights_and_postprocess = staticmethod(timed)
    for name in ITERATOR_NAMES:
        fn = getattr(loader, name, None)
        if fn is None:
            continue

        @functools.wraps(fn)
        def recorded(*args, _fn=fn, _name=name, **kwargs):
            workers = kwargs.get("max_workers")
            iterators.append(_name if workers is None else f"{_name}(max_workers={workers})")
            return _fn(*args, **kwargs)

        setattr(loader, name, recorded)


def time_iteration(runner, mode: str) -> tuple[float, float, int, int]:
    """(wall s, CPU s of all threads, tensors, bytes) for one pass over SGLang's weight iterator."""
    t0, c0 = time.perf_counter(), time.process_time()
    count = nbytes = 0
    kept = []
    for _, tensor in runner.loader._get_all_weights(runner.model_config, None):
        kept.append(touch(tensor, mode))
        count += 1
        nbytes += tensor.numel() * tensor.element_size()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    del kept
    gc.collect()
    return wall, cpu, count, nbytes


def drop_model(runner) -> None:
    runner.model = None
    gc.collect()


def time_reload(runner) -> tuple[float, float]:
    """(SGLang's weight_load_time, CPU s of all threads) for ModelRunner.load_model() on a dropped model."""
    drop_model(runner)
    c0 = time.process_time()
    runner.load_model()
    return runner.weight_load_time, time.process_time() - c0


def profile_reload(runner) -> str:
    drop_model(runner)
    prof = cProfile.Profile()
    prof.enable()
    runner.load_model()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(PROFILE_TOP)
    return out.getvalue()


def measure(checkpoint: Path, reps: int, extra_args: list[str], profile: bool) -> dict:
    prepare_process()
    from tqdm import tqdm

    files = sorted(checkpoint.glob("model-*.safetensors"))
    load_weights_s: list[float] = []
    iterators: list[str] = []
    instrument_loader(load_weights_s, iterators)
    warmed = warm_page_cache(files)
    t0 = time.perf_counter()
    runner = build_runner(checkpoint, extra_args)
    result = {
        "checkpoint": str(checkpoint),
        "files": len(files),
        "file_bytes": sum(p.stat().st_size for p in files),
        "page_cache_warmed_bytes": warmed,
        "first_runner_build_s": time.perf_counter() - t0,
        "first_weight_load_s": runner.weight_load_time,
        "model_class": f"{type(runner.model).__module__}.{type(runner.model).__qualname__}",
        "loader_class": type(runner.loader).__name__,
        "model_dtype": str(runner.model_config.dtype),
        "ours_weight_load_s": [],
        "ours_weight_load_cpu_s": [],
        "ours_load_weights_only_s": [],
        **{f"iterate_{m}_{unit}": [] for m in TOUCH_MODES for unit in ("s", "cpu_s")},
    }
    for _ in tqdm(range(reps), desc=f"load timing {checkpoint.name}", unit="rep"):
        drop_model(runner)
        for mode in TOUCH_MODES:
            wall, cpu, count, nbytes = time_iteration(runner, mode)
            result[f"iterate_{mode}_s"].append(wall)
            result[f"iterate_{mode}_cpu_s"].append(cpu)
            result["iterated_tensors"], result["iterated_bytes"] = count, nbytes
        wall, cpu = time_reload(runner)
        result["ours_weight_load_s"].append(wall)
        result["ours_weight_load_cpu_s"].append(cpu)
        result["ours_load_weights_only_s"].append(load_weights_s[-1])
    result["iterator"] = iterators[-1] if iterators else "unknown"
    if profile:
        result["profile_tottime_top"] = profile_reload(runner)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the timings")
    parser.add_argument("--profile", action="store_true", help="cProfile one extra load, top functions by tottime")
    parser.add_argument("--server-arg", action="append", default=[], help="extra launch_server flag (repeatable)")
    args = parser.parse_args(argv)
    result = measure(args.checkpoint, args.reps, args.server_arg, args.profile)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
