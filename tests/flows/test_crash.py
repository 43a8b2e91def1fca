"""Crash safety: `tidings worker` processes killed with SIGKILL again and again while they
advance runs, then restarted. Every run must end having taken each step exactly once: one
ledger row per send step, one history record per step visit, nothing stuck.

The size defaults to a few thousand runs; `TIDINGS_CRASH_RUNS=100000` runs the issue's
full proof (minutes). Time here is real time (separate processes), but nothing is asserted
about it: the deadline only turns a stuck run into a failure instead of a hang."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tidings.clock import SystemClock
from tidings.config import Settings
from tidings.db import tables
from tidings.flows import enrolment, history, store

RUNS = int(os.environ.get("TIDINGS_CRASH_RUNS", "3000"))
KILLS = int(os.environ.get("TIDINGS_CRASH_KILLS", "6"))
FLOW: dict[str, Any] = {
    "key": "crash",
    "name": "Crash test",
    "trigger": "api",
    "steps": [
        {"id": "first", "send_email": {"template": "one"}},
        {"id": "pause", "wait": "2s"},
        {"id": "second", "send_email": {"template": "two"}},
        {"id": "tag", "score": 1},
    ],
}


def _enrol_everyone(engine: Engine, clock: SystemClock) -> None:
    c = tables.contacts
    now = clock.now()
    with engine.begin() as conn:
        rows = [{"attributes": {}, "created_at": now, "updated_at": now} for _ in range(RUNS)]
        conn.execute(c.insert(), rows)
        store.apply(conn, clock, FLOW, activate=True)
        row = store.find(conn, "crash")
        flow = store.graph(conn, row.id, row.version)
        ids = conn.scalars(select(c.c.id).order_by(c.c.id)).all()
        cands = [enrolment.Candidate(cid, key="", source="api") for cid in ids]
        enrolment.enrol(conn, clock, row, flow, cands)


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TIDINGS_DATABASE_URL": settings.database_url,
        "TIDINGS_FLOW_BATCH_SIZE": "250",
        "TIDINGS_WORKER_POLL_SECONDS": "0.05",
        "TIDINGS_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "tidings", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _live(engine: Engine) -> int:
    r = tables.flow_runs
    with engine.connect() as conn:
        query = select(func.count()).select_from(r).where(r.c.ended_at.is_(None))
        return int(conn.execute(query).scalar_one())


@pytest.mark.slow
def test_killed_workers_advance_every_run_exactly_once(settings: Settings, engine: Engine) -> None:
    _enrol_everyone(engine, SystemClock())
    rng = random.Random(7)  # noqa: S311 - test timing, not security
    for _ in range(KILLS):
        worker = _start_worker(settings)
        time.sleep(rng.uniform(0.8, 2.5))  # let it start and get into a batch
        worker.send_signal(signal.SIGKILL)
        worker.communicate()
    worker = _start_worker(settings)
    try:
        deadline = time.monotonic() + 120 + RUNS / 200
        while _live(engine) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        stderr = worker.communicate(timeout=60)[1].decode()
    # 0: stopped by SIGTERM after its batch; -SIGTERM: the signal came before it had
    # installed its handler (nothing was left to do by then)
    assert worker.returncode in (0, -signal.SIGTERM), stderr
    _check_exactly_once(engine)


def _check_exactly_once(engine: Engine) -> None:
    r, m, h = tables.flow_runs, tables.messages, tables.flow_run_steps
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(r.c.status, func.count()).group_by(r.c.status)).all())
        assert statuses == {"completed": RUNS}
        per_step = dict(conn.execute(select(m.c.step_id, func.count()).group_by(m.c.step_id)).all())
        assert per_step == {"first": RUNS, "second": RUNS}
        visits = conn.execute(
            select(h.c.step_id, h.c.action, func.count())
            .where(h.c.first.is_(True))
            .group_by(h.c.step_id, h.c.action)
        ).all()
        expected = {
            ("first", history.SENT): RUNS,
            ("pause", history.WAITING): RUNS,
            ("second", history.SENT): RUNS,
            ("tag", history.SCORED): RUNS,
        }
        assert {(s, a): n for s, a, n in visits} == expected
        entered = conn.execute(
            select(func.count()).select_from(h).where(h.c.action == history.ENTERED)
        ).scalar_one()
        assert entered == RUNS
        scores = conn.execute(select(func.sum(tables.contacts.c.score))).scalar_one()
        assert scores == RUNS  # each score step applied once, never twice
