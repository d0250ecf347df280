"""Fixtures shared by the test files (the plain helpers are in helpers.py)."""
import functools
import http.server
import socket
import threading

import pytest

from cyclelib import train_cyclegan

from helpers import smoke, two_step_run


@pytest.fixture(scope="session")
def run10(tmp_path_factory):
    """A 10-step digits run with a checkpoint every 2 steps (do not modify: copy it)."""
    out = tmp_path_factory.mktemp("run10") / "run"
    train_cyclegan(smoke(out, max_steps=10, checkpoint_every=2, n_epochs=5), progress=False)
    return out


@pytest.fixture(scope="session")
def two_steps(tmp_path_factory):
    """A smoke run of two steps with a checkpoint after each (:func:`helpers.two_step_run`; do not modify)."""
    return two_step_run(tmp_path_factory.mktemp("two_steps") / "run")


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on a free port serving tmp_path/served; yields (that folder, its base URL)."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)  # quick shutdown
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: "offline"."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def offline(monkeypatch):
    """The base URL of a closed port on 127.0.0.1, with no proxy in between."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return f"http://127.0.0.1:{_closed_port()}"
