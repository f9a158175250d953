"""Data sources: a local path, else the cache, else one download into the cache; offline, an error that says so."""

import functools
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sglang_glm5.eval.data import gsm8k_path
from sglang_glm5.eval.data import mmlu_dir as locate_mmlu
from sglang_glm5.eval.errors import EvalError
from sglang_glm5.serving.process import free_port


@pytest.fixture
def file_server(tmp_path):
    """Serves tmp_path/www over HTTP; `.stop()` takes it away (the machine goes offline)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.www = www
    server.url = f"http://127.0.0.1:{server.server_address[1]}"

    def stop():
        server.shutdown()
        server.server_close()

    server.stop = stop
    yield server
    if server.socket.fileno() != -1:
        stop()


def test_local_path_wins(tmp_path, gsm8k_file):
    assert gsm8k_path(str(gsm8k_file), tmp_path / "cache") == gsm8k_file


def test_missing_local_path_named(tmp_path):
    with pytest.raises(EvalError, match=rf"--data {tmp_path}/nope.jsonl: no such file or folder"):
        gsm8k_path(str(tmp_path / "nope.jsonl"), tmp_path / "cache")
    with pytest.raises(EvalError, match=rf"--data {tmp_path}/nope: no such folder \(MMLU"):
        locate_mmlu(str(tmp_path / "nope"), tmp_path / "cache")


def test_gsm8k_downloaded_once_then_cached(tmp_path, file_server, gsm8k_file):
    (file_server.www / "test.jsonl").write_bytes(gsm8k_file.read_bytes())
    cache = tmp_path / "cache"
    path = gsm8k_path(None, cache, url=f"{file_server.url}/test.jsonl")
    assert path == cache / "gsm8k" / "test.jsonl" and path.read_bytes() == gsm8k_file.read_bytes()
    file_server.stop()
    assert gsm8k_path(None, cache, url=f"{file_server.url}/test.jsonl") == path


def test_mmlu_archive_downloaded_and_unpacked(tmp_path, file_server, mmlu_dir):
    with tarfile.open(file_server.www / "data.tar", "w") as tar:
        tar.add(mmlu_dir, arcname="data")
    cache = tmp_path / "cache"
    got = locate_mmlu(None, cache, f"{file_server.url}/data.tar")
    assert got == cache / "mmlu" / "data"
    for split in ("dev", "test"):
        for original in (mmlu_dir / split).iterdir():
            assert (got / split / original.name).read_bytes() == original.read_bytes()
    assert not (cache / "mmlu" / "data.tar").exists()
    file_server.stop()
    assert locate_mmlu(None, cache, f"{file_server.url}/data.tar") == got


@pytest.mark.parametrize("what", ["gsm8k", "mmlu"])
def test_offline_without_data_is_a_clear_error(tmp_path, what):
    url = f"http://127.0.0.1:{free_port()}/data"
    locate = {"gsm8k": gsm8k_path, "mmlu": locate_mmlu}[what]
    with pytest.raises(EvalError) as err:
        locate(None, tmp_path / "cache", url)
    message = str(err.value)
    assert message.startswith(f"{what.upper()}: no --data given, no cached copy at {tmp_path}/cache/{what}/")
    assert f"downloading {url} failed (ConnectionError" in message
    assert "Without network access pass a local copy: --data PATH" in message
    assert not any((tmp_path / "cache" / what).iterdir())


def test_http_error_is_not_cached(tmp_path, file_server):
    with pytest.raises(EvalError, match=r"404"):
        gsm8k_path(None, tmp_path / "cache", url=f"{file_server.url}/missing.jsonl")
    assert not (tmp_path / "cache" / "gsm8k" / "test.jsonl").exists()
