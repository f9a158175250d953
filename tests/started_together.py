"""Start-up refusal tests start all of their module's start-up processes at once, then each test waits for and
asserts on its own result. A refusal is mostly SGLang's imports, one core's work, so on CI's 2 cores two run in about
the time of one; every process is still stopped at the end of the module."""

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from sglang_glm5.serving.process import ServerProcess


@contextlib.contextmanager
def servers_started_together(servers: Mapping[str, ServerProcess]):
    """`with servers_started_together({...}) as servers:` each test then calls `servers[name].wait_ready()`."""
    try:
        for server in servers.values():
            server.start(wait_ready=False)
        yield servers
    finally:
        for server in servers.values():
            if server.proc is not None:
                server.stop()


class Started:
    """A command running in the background (its own process group), stdout and stderr into `log`; `run_s` is how
    long it ran (None while it runs), timed by a watcher thread so that waiting for it later does not count."""

    def __init__(self, argv: list[str], log: Path, env: Mapping[str, str] | None = None):
        self.log = Path(log)
        self.run_s: float | None = None
        self.started_at = time.monotonic()
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._timer = threading.Thread(target=self._time_it, daemon=True)
        self._timer.start()

    def _time_it(self) -> None:
        self.proc.wait()
        self.run_s = time.monotonic() - self.started_at

    def result(self, timeout_s: float) -> tuple[int, str]:
        """(exit status, output) once it exits; killed and TimeoutExpired if it runs past `timeout_s` from its start."""
        try:
            code = self.proc.wait(timeout=max(0.0, self.started_at + timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._timer.join()
        return code, self.log.read_text(errors="replace")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def commands_started_together(commands: Mapping[str, Started]):
    try:
        yield commands
    finally:
        for command in commands.values():
            command.kill()
