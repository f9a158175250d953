"""Shared fixtures: tiny checkpoints (built once per session) and the HF transformers oracle."""

from pathlib import Path

import pytest

from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint

PARITY_INDEX_TOPK = 16  # smaller than every test prompt, so DSA really selects


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """`tiny_checkpoint("bf16" | "fp8") -> Path`, each written once per session."""
    built: dict[str, Path] = {}

    def get(dtype: str) -> Path:
        if dtype not in built:
            built[dtype] = write_tiny_checkpoint(
                tmp_path_factory.mktemp(f"tiny-{dtype}"), dtype=dtype, index_topk=PARITY_INDEX_TOPK
            )
        return built[dtype]

    return get


@pytest.fixture(scope="session")
def server_log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def tiny_server(tiny_checkpoint, server_log_dir):
    """`with tiny_server(log_name, *flags, dtype="bf16", env=None) as server:` the tiny checkpoint served by
    launch_server through our plugin (one per test module: hold it in a module-scoped fixture)."""
    from sglang_glm5.serving.process import ServerProcess

    def start(log_name: str, *flags: str, dtype: str = "bf16", env: dict | None = None) -> ServerProcess:
        return ServerProcess(tiny_checkpoint(dtype), server_log_dir / log_name, list(flags), env=env)

    return start
