"""A launch_server process (through `sglang-glm5 serve`) that tests, benchmarks and the demo start and stop."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

READY_TIMEOUT_S = 600
STOP_TIMEOUT_S = 60
POLL_S = 0.2  # /health and process-group checks are cheap; a coarse poll only adds wait to every start and stop


class ServerStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`with ServerProcess(model_path, log_path, [flags]) as server:` -> `server.url`; stops the whole process group."""

    def __init__(self, model_path, log_path, extra_args=(), port=None, env=None, command=None):
        """`command`: run this one (e.g. a node's command from `sglang-glm5 launch`, which must listen on `port`)
        instead of `sglang-glm5 serve --model-path model_path ... extra_args`."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.command = list(command) if command is not None else [
            sys.executable, "-m", "sglang_glm5.cli", "serve",
            "--model-path", str(model_path), "--host", "127.0.0.1", "--port", str(self.port), *extra_args,
        ]
        self.env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    def start(self, wait_ready: bool = True) -> "ServerProcess":
        """Start it; wait until /health answers unless `wait_ready` is False (a non-head node serves no HTTP, or the
        caller starts several and then calls `wait_ready()` on each)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        return self.wait_ready() if wait_ready else self

    def wait_ready(self) -> "ServerProcess":
        """Until /health answers; ServerStartError (with the log's tail) if the process exits first or takes too long."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"server exited with {self.proc.returncode}; log {self.log_path}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(POLL_S)
        self.stop()
        raise ServerStartError(f"server not ready after {READY_TIMEOUT_S}s; log {self.log_path}:\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM to launch_server, which drains and stops its own children; SIGKILL to the group after a timeout."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.returncode = None
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if self.returncode is None or self.group_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.returncode = self.proc.wait()
        self._log.close()
        return self.returncode

    def group_alive(self) -> bool:
        """Whether any process of the server's process group (launch_server and its children) still runs."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def log_tail(self, lines: int = 60) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
