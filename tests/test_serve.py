"""`tidings serve` as `make run` starts it: migrates a fresh SQLite file and answers."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
def test_serve_migrates_and_serves_api_docs_and_openapi(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TIDINGS_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    server = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "tidings", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        health = _wait_for(f"{base}/healthz", server)
        assert health.json()["status"] == "ok"
        assert "swagger" in httpx.get(f"{base}/docs").text.lower()
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "Tidings"
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=20)[0].decode()
    assert "worker started" in output and "worker stopped" in output
    assert (tmp_path / "fresh.db").exists()


def _wait_for(url: str, server: subprocess.Popen[bytes]) -> httpx.Response:
    for _ in range(200):  # bounded: at most ~20 s
        if server.poll() is not None:
            raise AssertionError(server.communicate()[0].decode())
        try:
            return httpx.get(url, timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not start")
