"""What every benchmark needs: a Tidings server in a subprocess on a free loopback port, a
fresh database (SQLite file or PostgreSQL), peak memory from /proc, and result lines.

Everything is bounded (timeouts, iteration counts) and talks to localhost only."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from tidings import keys
from tidings.clock import SystemClock
from tidings.config import Settings
from tidings.db import migrate, tables
from tidings.db.engine import make_engine

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/tidings_bench"
TIDINGS = str(Path(sys.executable).with_name("tidings"))


def pg_url() -> str:
    """The benchmark database: TIDINGS_BENCH_DATABASE_URL, or a local `tidings_bench`."""
    return os.environ.get("TIDINGS_BENCH_DATABASE_URL", DEFAULT_PG_URL)


def ensure_pg_database(url: str) -> None:
    """Create the PostgreSQL database of `url` if it does not exist (`createdb`)."""
    import psycopg

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [parsed.database])
        if found.fetchone() is None:
            subprocess.run(
                ["createdb", "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432),
                 "-U", parsed.username or "postgres", str(parsed.database)],
                check=True,
                timeout=60,
            )  # fmt: skip


def fresh_database(url: str) -> Engine:
    """An engine on `url` with the migrated schema and every table empty."""
    if not url.startswith("sqlite"):
        ensure_pg_database(url)
    engine = make_engine(Settings(database_url=url))
    migrate.upgrade(engine)
    empty_tables(engine)
    return engine


def empty_tables(engine: Engine, names: Sequence[str] = ()) -> None:
    """Delete every row of `names` (default: all tables) and, on PostgreSQL, checkpoint so
    each measured phase starts from the same state."""
    names = names or [t.name for t in tables.metadata.sorted_tables]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")
        else:
            for name in reversed(list(names)):
                conn.exec_driver_sql(f"DELETE FROM {name}")  # noqa: S608 - our table names
    raw = engine.raw_connection()  # outside any transaction
    try:
        checkpoint = (
            "CHECKPOINT" if engine.dialect.name == "postgresql" else "PRAGMA wal_checkpoint"
        )
        raw.driver_connection.execute(checkpoint)  # type: ignore[union-attr]
        raw.driver_connection.commit()  # type: ignore[union-attr]
    finally:
        raw.close()


def create_key(engine: Engine, scope: str = "write") -> str:
    """A new API key's full secret."""
    with engine.begin() as conn:
        return keys.create(conn, SystemClock(), scope, f"bench {scope}")[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running `tidings serve` subprocess and the memory its processes used."""

    process: subprocess.Popen[bytes]
    url: str
    peak_rss: dict[int, int] = field(default_factory=dict)  # pid -> peak bytes

    def pids(self) -> list[int]:
        """The server process and all its descendants (uvicorn workers)."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo.extend(int(c) for c in (task / "children").read_text().split())
        return found

    def sample_memory(self) -> None:
        """Remember each process's peak resident set (the kernel's VmHWM)."""
        for pid in self.pids():
            peak = peak_rss_bytes(pid)
            if peak:
                self.peak_rss[pid] = max(peak, self.peak_rss.get(pid, 0))

    @property
    def total_peak_mb(self) -> float:
        """Sum of every process's peak: an upper bound of the server's footprint."""
        return sum(self.peak_rss.values()) / 2**20

    @property
    def largest_peak_mb(self) -> float:
        return max(self.peak_rss.values(), default=0) / 2**20


def peak_rss_bytes(pid: int) -> int:
    """Peak resident memory of `pid` (VmHWM from /proc), 0 if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_for_health(url: str, timeout: float = 60.0) -> None:
    """Poll `url`/healthz until it answers 200 (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"the server at {url} did not become healthy in {timeout:.0f} s")


def uvicorn_factory(workers: int = 2) -> Callable[[int], list[str]]:
    """The API alone (no worker thread) as `uvicorn --factory` with `workers` processes.

    Lighter than `tidings serve --workers N`, whose supervising process imports the app."""

    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "--factory", "tidings.api.app:app_from_env",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip

    return command


def tidings_serve(*args: str) -> Callable[[int], list[str]]:
    """`tidings serve ARGS` (e.g. `--no-worker`, `--workers 2`)."""
    return lambda port: [TIDINGS, "serve", "--host", "127.0.0.1", "--port", str(port), *args]


@contextlib.contextmanager
def serve(
    database_url: str,
    command: Callable[[int], list[str]] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """The server `command(port)` (default: `uvicorn_factory()`) on a free loopback port,
    its memory sampled every 0.2 s while it runs. Stopped (SIGINT, then SIGKILL) on exit."""
    port = free_port()
    environ = os.environ | {"TIDINGS_DATABASE_URL": database_url, "TIDINGS_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen((command or uvicorn_factory())(port), env=environ | (env or {}))
    server = Server(process, f"http://127.0.0.1:{port}")
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_until, args=(server, stop), daemon=True)
    try:
        wait_for_health(server.url)
        sampler.start()
        yield server
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join(timeout=5)
        server.sample_memory()
        _stop(process)


def _sample_until(server: Server, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        server.sample_memory()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def machine() -> str:
    """`2 cores, Linux x86_64, Python 3.11.7` — for the result table."""
    system = f"{platform.system()} {platform.machine()}"
    return f"{os.cpu_count() or 0} cores, {system}, Python {platform.python_version()}"


def today() -> str:
    return date.today().isoformat()  # noqa: DTZ011 - a label for humans


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def markdown_row(cells: Sequence[object]) -> str:
    """One line of a markdown table, ready for docs/benchmarks.md."""
    return "| " + " | ".join(str(c) for c in cells) + " |"
