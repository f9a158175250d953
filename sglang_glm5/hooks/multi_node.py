"""Multi-node start-up: a node other than the head waits a bounded time for the head's address, then fails clearly.

SGLang's ranks meet at `--dist-init-addr` (the head node, node 0, hosts torch.distributed's store there). A node
whose head is absent or unreachable would otherwise sit in the store's connect loop for torch's default timeout
(30 min) and then fail with a generic socket error. Here each scheduler of a node with `--node-rank` >= 1 first waits
until the head's address accepts a TCP connection, at most `SGLANG_GLM5_HEAD_WAIT_S` seconds (default 300: the
head may still be importing SGLang), and otherwise raises an error that names the address and the flag.
"""

import logging
import os
import socket
import time
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

HEAD_WAIT_ENV = "SGLANG_GLM5_HEAD_WAIT_S"
DEFAULT_HEAD_WAIT_S = 300.0
POLL_S = 1.0


class HeadUnreachableError(RuntimeError):
    pass


def head_wait_s(env=os.environ) -> float:
    text = env.get(HEAD_WAIT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_HEAD_WAIT_S
    except ValueError:
        raise HeadUnreachableError(f"{HEAD_WAIT_ENV}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise HeadUnreachableError(f"{HEAD_WAIT_ENV}={text!r} must be > 0 seconds")
    return value


def wait_for_head(host: str, port: int, node_rank: int, wait_s: float) -> None:
    """Return once host:port accepts a TCP connection; raise HeadUnreachableError after `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    last_error = None
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(POLL_S * 5, wait_s)):
                return
        except OSError as e:
            last_error = e
        if time.monotonic() >= deadline:
            raise HeadUnreachableError(
                f"node {node_rank} cannot reach the head node at {host}:{port} (--dist-init-addr) after {wait_s:g} s"
                f" ({last_error}): start node 0 with the same --dist-init-addr first, and check that this address and"
                f" port are reachable from this node (wait longer with {HEAD_WAIT_ENV}=SECONDS)"
            )
        time.sleep(POLL_S)


def dist_init_method_after_head(original, *args, **kwargs):
    method = original(*args, **kwargs)
    from sglang.srt.runtime_context import get_parallel

    parallel = get_parallel()
    address = urlsplit(method)
    if parallel.nnodes > 1 and parallel.node_rank >= 1 and address.scheme == "tcp" and address.port:
        logger.info("node %d: waiting for the head node at %s:%d", parallel.node_rank, address.hostname, address.port)
        wait_for_head(address.hostname, address.port, parallel.node_rank, head_wait_s())
    return method
