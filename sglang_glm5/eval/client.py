"""An OpenAI-compatible HTTP client: concurrent requests, a progress bar, retries on transient errors.

A request that still fails after its retries becomes a `Reply` with `error` set: it is counted, never raised.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import requests
from tqdm import tqdm

from sglang_glm5.eval.errors import EvalError

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Reply:
    body: dict | None  # the decoded JSON reply; None when the request failed
    error: str | None
    attempts: int


class TransientError(Exception):
    pass


def api_root(base_url: str) -> str:
    """`http://h:p`, `http://h:p/` and `http://h:p/v1` all name the same server."""
    url = base_url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise EvalError(f"--base-url {base_url!r}: expected http://HOST:PORT")
    return url.removesuffix("/v1")


class OpenAIClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 600.0, retries: int = 3,
                 backoff_s: float = 1.0):
        if retries < 0:
            raise EvalError(f"--retries {retries}: must be >= 0")
        self.root = api_root(base_url)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _once(self, method: str, path: str, body: dict | None) -> dict:
        try:
            response = self._session().request(method, self.root + path, json=body, headers=self.headers,
                                               timeout=self.timeout_s)
        except (requests.ConnectionError, requests.Timeout) as e:
            raise TransientError(f"{type(e).__name__}: {e}") from None
        if response.status_code in TRANSIENT_STATUS:
            raise TransientError(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code != 200:
            raise EvalError(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
        try:
            data = response.json()
        except ValueError:
            raise TransientError(f"HTTP 200 with a body that is not JSON: {response.text[:200]!r}") from None
        if not isinstance(data, dict):
            raise EvalError(f"{method} {path}: expected a JSON object, got {type(data).__name__}")
        return data

    def request(self, method: str, path: str, body: dict | None = None) -> Reply:
        for attempt in range(1, self.retries + 2):
            try:
                return Reply(self._once(method, path, body), None, attempt)
            except TransientError as e:
                error = str(e)
            except EvalError as e:  # a 4xx: the same request would fail again
                return Reply(None, str(e), attempt)
            if attempt <= self.retries:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
        return Reply(None, f"{method} {path}: gave up after {attempt} attempts: {error}", attempt)

    def model_name(self) -> str:
        """The served model's id (`GET /v1/models`); a server that cannot answer this is not worth evaluating."""
        reply = self.request("GET", "/v1/models")
        if reply.error:
            raise EvalError(f"cannot reach the server at {self.root}: {reply.error}")
        models = reply.body.get("data") or []
        if not models or "id" not in models[0]:
            raise EvalError(f"{self.root}/v1/models: no model listed: {reply.body}")
        return models[0]["id"]

    def post_all(self, path: str, bodies: list[dict], parallel: int, desc: str) -> list[Reply]:
        """POST every body with at most `parallel` in flight; replies in the order of `bodies`."""
        if parallel < 1:
            raise EvalError(f"--parallel {parallel}: must be >= 1")
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = [pool.submit(self.request, "POST", path, body) for body in bodies]
            for _ in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="req"):
                pass
            return [f.result() for f in futures]
