"""Fixtures: every database test runs on a fresh SQLite file and, when
TIDINGS_TEST_DATABASE_URL is set, on PostgreSQL too. The schema is built by the real
migrations once per session; each test then gets empty tables."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tidings import keys
from tidings.api.app import create_app
from tidings.clock import FakeClock
from tidings.config import Settings
from tidings.db import migrate, tables
from tidings.db.engine import make_engine
from tidings.worker import Worker

PG_URL = os.environ.get("TIDINGS_TEST_DATABASE_URL")
BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]


def make_settings(database_url: str, **overrides: object) -> Settings:
    return Settings(database_url=database_url, api_key_cache_seconds=0, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating per test is slow)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(make_settings(f"sqlite:///{path}"))
    migrate.upgrade(engine)
    engine.dispose()  # the last connection to close folds the WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Engine]:
    assert PG_URL, "PostgreSQL tests need TIDINGS_TEST_DATABASE_URL"
    engine = make_engine(make_settings(PG_URL))
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _truncate_pg(engine: Engine) -> None:
    names = ", ".join(t.name for t in tables.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "tidings.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    _truncate_pg(request.getfixturevalue("pg_engine"))
    assert PG_URL
    return PG_URL


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def worker(settings: Settings, engine: Engine, clock: FakeClock) -> Worker:
    return Worker(settings, engine, clock)


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine, clock)) as client:
        yield client


def make_key(engine: Engine, clock: FakeClock, scope: str) -> str:
    with engine.begin() as conn:
        return keys.create(conn, clock, scope, f"test {scope}")[1]


@pytest.fixture
def admin_key(engine: Engine, clock: FakeClock) -> str:
    return make_key(engine, clock, "admin")


@pytest.fixture
def admin(admin_key: str) -> dict[str, str]:
    """Headers for an admin bearer key."""
    return {"Authorization": f"Bearer {admin_key}"}


@pytest.fixture
def write_key(engine: Engine, clock: FakeClock) -> str:
    return make_key(engine, clock, "write")


@pytest.fixture
def read_key(engine: Engine, clock: FakeClock) -> str:
    return make_key(engine, clock, "read")
