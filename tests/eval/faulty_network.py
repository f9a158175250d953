"""A faulty network between the eval client and a server: an HTTP proxy that, for chosen requests, answers 5xx,
stalls, drops the connection or returns a broken body, and forwards everything else untouched.

`faults` maps a text found in a request body to the faults of its successive attempts; once that list is used up
(or for requests that match nothing) the request goes through.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import requests

FAULTS = ("503", "500", "drop", "stall", "garbage", "400")


class FaultyNetwork:
    def __init__(self, upstream: str, faults: dict[str, list[str]], stall_s: float = 5.0):
        assert all(f in FAULTS for plan in faults.values() for f in plan), faults
        self.upstream = upstream.rstrip("/")
        self.faults = faults
        self.stall_s = stall_s
        self.attempts: dict[str, int] = defaultdict(int)  # key -> requests seen
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fault_for(self, body: bytes) -> str | None:
        text = body.decode(errors="replace")
        for key, plan in self.faults.items():
            if key in text:
                with self.lock:
                    n = self.attempts[key]
                    self.attempts[key] += 1
                return plan[n] if n < len(plan) else None
        return None

    def _handler(self):
        network = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: bytes, content_type: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, method: str, body: bytes | None):
                fault = network.fault_for(body or b"")
                if fault in ("503", "500", "400"):
                    return self._reply(int(fault), b'{"error": "injected"}')
                if fault == "drop":
                    self.close_connection = True
                    return self.connection.shutdown(2)
                if fault == "stall":
                    time.sleep(network.stall_s)
                    self.close_connection = True
                    return None
                if fault == "garbage":
                    return self._reply(200, b'{"choices": [', "text/plain")
                upstream = requests.request(method, network.upstream + self.path, data=body,
                                            headers={"Content-Type": "application/json"}, timeout=600)
                self._reply(upstream.status_code, upstream.content, upstream.headers.get("Content-Type", "application/json"))

            def do_GET(self):
                self._forward("GET", None)

            def do_POST(self):
                self._forward("POST", self.rfile.read(int(self.headers.get("Content-Length", 0))))

        return Handler

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
