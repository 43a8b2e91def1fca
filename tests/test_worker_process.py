"""`tidings worker` as an operator runs it: SIGTERM stops it cleanly between batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tidings.config import Settings


@pytest.mark.slow
def test_sigterm_stops_the_worker_cleanly(settings: Settings) -> None:
    env = {**os.environ, "TIDINGS_DATABASE_URL": settings.database_url, "TIDINGS_LOG_LEVEL": "INFO"}
    worker = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "tidings", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    seen = []
    for line in worker.stderr:  # ends if the process dies before starting
        seen.append(line)
        if "worker started" in line:
            break
    worker.send_signal(signal.SIGTERM)
    rest = worker.communicate(timeout=60)[1]
    assert worker.returncode == 0, "".join(seen) + rest
    assert "worker stopped" in rest
