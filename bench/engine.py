"""The flow engine at scale: N contacts enrolled in one flow through the API trigger, taken
through a send and a wait by the worker, then the wait's timers fired (second send, run
completed), beside hand-written set-based SQL doing the same state changes.

    python -m bench engine                                  # 1M contacts, both engines
    python -m bench engine --contacts 100000 --engine sqlite
    python -m bench.engine --contacts 50000 --batch-size 5000

The flow: `trigger: api`, `steps: [send_email t, wait 1d, send_email t2]`. Phases, each
timed: (0) enrol every contact (`enrolment.enrol_query`: one INSERT ... SELECT of the runs,
one of their `entered` history); (a) the worker (`runs.advance_batch`, a batch per
transaction, as `runs.advance_due` runs it) takes every run through its first steps: a
ledger row for `t`, the wait started; (b) a FakeClock moved a day on, the worker fires
every due timer: the wait ends, a ledger row for `t2`, the run completes.

Baseline, same run and database, after ours (runs, history and ledger emptied in between;
on PostgreSQL truncated and vacuumed): enrolment as one INSERT ... SELECT of the runs and
one of their history; then per batch of the same size, the ids claimed with the worker's
query, one `INSERT ... SELECT` into messages, one into the history and one `UPDATE` of the
runs, writing the same rows and the same run state (checked: the row counts must match).
It evaluates nothing (no engine, no facts, no caps), so it is a floor for the time the
writes need, not a competitor doing the same checks.

"Steps" are the flow steps a run enters (what the flow's stats count): 2 per run in (a),
the send in (b). Each engine runs in a fresh process and ours goes first, so the peak RSS
(VmHWM, reset when the kernel allows it) is the worker's own."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine, bindparam, select, text

from bench import common
from tidings.clock import FakeClock
from tidings.config import Settings
from tidings.db import tables
from tidings.db.engine import json_text
from tidings.db.types import UTCDateTime
from tidings.flows import enrolment, runs, store

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/tidings_bench_engine"
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")
FLOW: dict[str, Any] = {
    "key": "bench",
    "name": "Engine benchmark",
    "trigger": "api",
    "steps": [
        {"id": "first", "send_email": {"template": "t"}},
        {"id": "pause", "wait": "1d"},
        {"id": "second", "send_email": {"template": "t2"}},
    ],
}
WAIT = timedelta(days=1)
console = Console(soft_wrap=True)
#: A history record as the baseline writes it (step, action, first, detail), and one
#: phase's records with the runs' new values.
Record = tuple[str | None, str, bool, dict[str, Any]]
Phase = tuple[list[Record], dict[str, Any]]


# -- data ---------------------------------------------------------------------------------


CONTACTS_SQL = {
    "postgresql": """
        INSERT INTO contacts (email, timezone, attributes, score, created_at, updated_at)
        SELECT 'c' || g || '@example.com', (CAST(:zones AS text[]))[1 + g % 4], '{}', 0,
               :now, :now
        FROM generate_series(1, :n) AS g""",
    "sqlite": """
        WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :n)
        INSERT INTO contacts (email, timezone, attributes, score, created_at, updated_at)
        SELECT 'c' || n || '@example.com', json_extract(:zones, '$[' || (n % 4) || ']'),
               '{}', 0, :now, :now
        FROM g""",
}


def create_contacts(engine: Engine, n: int, now: datetime) -> None:
    """N contacts in one statement (a few zones, no attributes)."""
    pg = engine.dialect.name == "postgresql"
    statement = text(CONTACTS_SQL[engine.dialect.name]).bindparams(
        bindparam("now", type_=UTCDateTime())
    )
    zones: object = list(ZONES) if pg else json_text(list(ZONES))
    with engine.begin() as conn:
        conn.execute(statement, {"n": n, "now": now, "zones": zones})


def apply_flow(engine: Engine, clock: FakeClock) -> Any:
    with engine.begin() as conn:
        store.apply(conn, clock, FLOW, activate=True)
        return store.find(conn, FLOW["key"])


def reset(engine: Engine) -> None:
    """Back to no runs (after the baseline): the flow and contacts stay."""
    common.empty_tables(engine, ["flow_run_steps", "messages", "flow_runs"])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE contacts, flow_runs, flow_run_steps, messages"))


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: int(conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())  # noqa: S608
            for name in ("flow_runs", "messages", "flow_run_steps")
        } | {
            "completed": int(
                conn.execute(
                    text("SELECT count(*) FROM flow_runs WHERE status = 'completed'")
                ).scalar_one()
            )
        }


# -- ours ---------------------------------------------------------------------------------


def enrol_ours(engine: Engine, clock: FakeClock, flow_row: Any) -> int:
    """`enrolment.enrol_query` over every contact, in one transaction."""
    with engine.begin() as conn:
        flow = store.graph(conn, flow_row.id, flow_row.version)
        contact_ids = select(tables.contacts.c.id)
        started: int = enrolment.enrol_query(conn, clock, flow_row, flow, contact_ids)
        return started


def advance_ours(
    engine: Engine, clock: FakeClock, settings: Settings, done: Callable[[int], None]
) -> int:
    """The worker's task, reporting each batch."""
    advanced: int = runs.advance_due(engine, clock, settings, on_batch=done)
    return advanced


# -- the baseline -------------------------------------------------------------------------

CLAIM = {
    "postgresql": """
        SELECT id FROM flow_runs
        WHERE flow_id = :flow AND next_at <= :now AND ended_at IS NULL
        ORDER BY next_at LIMIT :batch FOR UPDATE SKIP LOCKED""",
    "sqlite": """
        SELECT id FROM flow_runs
        WHERE flow_id = :flow AND next_at <= :now AND ended_at IS NULL
        ORDER BY next_at LIMIT :batch""",
}
# The batch's ids, as one parameter.
IN_BATCH = {
    "postgresql": "id = ANY(CAST(:ids AS bigint[]))",
    "sqlite": "id IN (SELECT value FROM json_each(:ids))",
}
ENROL = {
    "postgresql": [
        """INSERT INTO flow_runs (flow_id, version, contact_id, entry_key, entry_seq, status,
                                  step_id, next_at, state, entered_at, updated_at)
           SELECT :flow, 1, id, '', 0, 'active', 'first', :now, CAST(:state AS jsonb), :now,
                  :now
           FROM contacts ON CONFLICT DO NOTHING""",
        """INSERT INTO flow_run_steps (run_id, flow_id, step_id, action, first, detail, at)
           SELECT id, :flow, NULL, 'entered', false, CAST(:detail AS jsonb), :now
           FROM flow_runs""",
    ],
    "sqlite": [
        """INSERT INTO flow_runs (flow_id, version, contact_id, entry_key, entry_seq, status,
                                  step_id, next_at, state, entered_at, updated_at)
           SELECT :flow, 1, id, '', 0, 'active', 'first', :now, :state, :now, :now
           FROM contacts WHERE true ON CONFLICT DO NOTHING""",
        """INSERT INTO flow_run_steps (run_id, flow_id, step_id, action, first, detail, at)
           SELECT id, :flow, NULL, 'entered', 0, :detail, :now FROM flow_runs""",
    ],
}


def _json(pg: bool, name: str) -> str:
    return f"CAST(:{name} AS jsonb)" if pg else f":{name}"


def send_sql(pg: bool, step: str, template: str) -> str:
    """The ledger rows of the batch's runs for `step`."""
    payload = (
        f"jsonb_build_object('flow', 'bench', 'run', id, 'step', '{step}')"
        if pg
        else f"json_object('flow', 'bench', 'run', id, 'step', '{step}')"
    )
    return f"""
        INSERT INTO messages (contact_id, channel, status, flow_id, run_id, step_id,
                              occurrence, template, payload, due_at, created_at, updated_at)
        SELECT contact_id, 'email', 'queued', flow_id, id, '{step}', 1, '{template}',
               {payload}, :now, :now, :now
        FROM flow_runs WHERE {IN_BATCH["postgresql" if pg else "sqlite"]}
        ON CONFLICT DO NOTHING"""  # noqa: S608 - our constants


def history_sql(pg: bool, records: int) -> str:
    """`records` history rows per run of the batch (:s0, :a0, :f0, :d0, ...)."""
    values = ", ".join(
        f"(:s{i}, :a{i}, :f{i}, {_json(pg, f'd{i}')})" if pg else f"(:s{i}, :a{i}, :f{i}, :d{i})"
        for i in range(records)
    )
    return f"""
        INSERT INTO flow_run_steps (run_id, flow_id, step_id, action, first, detail, at)
        SELECT r.id, r.flow_id, v.column1, v.column2, v.column3, v.column4, :now
        FROM flow_runs r, (VALUES {values}) AS v
        WHERE r.{IN_BATCH["postgresql" if pg else "sqlite"]}"""  # noqa: S608 - our constants


def update_sql(pg: bool, *, ended: bool) -> str:
    """The runs' new state: `:patch` merged in, `pending` dropped when the run ends."""
    where = IN_BATCH["postgresql" if pg else "sqlite"]
    if pg:
        state = (
            "(state - 'pending') || CAST(:patch AS jsonb)"
            if ended
            else ("state || CAST(:patch AS jsonb)")
        )
    else:
        state = (
            "json_patch(json_remove(state, '$.pending'), :patch)"
            if ended
            else ("json_patch(state, :patch)")
        )
    return f"""
        UPDATE flow_runs SET status = :status, step_id = :step, next_at = :next_at,
               state = {state}, updated_at = :now, ended_at = :ended_at
        WHERE {where}"""  # noqa: S608 - our constants


def first_phase(now: datetime) -> Phase:
    """Phase (a): the history records and the run's new values (what the engine writes)."""
    until = (now + WAIT).isoformat()
    records: list[Record] = [
        ("first", "sent", True, {"channel": "email", "occurrence": 1, "template": "t"}),
        ("pause", "waiting", True, {"until": until}),
    ]
    patch = {
        "visits": {"first": 1, "pause": 1},
        "last_sent": "first",
        "pending": {"step": "pause", "until": until},
    }
    run = {"status": "waiting", "step": "pause", "next_at": now + WAIT, "ended_at": None}
    return records, {"patch": patch, **run}


def second_phase(now: datetime) -> Phase:
    """Phase (b): the wait ends, the second send, completed."""
    records: list[Record] = [
        ("pause", "waited", False, {}),
        ("second", "sent", True, {"channel": "email", "occurrence": 1, "template": "t2"}),
        (None, "completed", False, {}),
    ]
    patch = {"visits": {"first": 1, "pause": 1, "second": 1}, "last_sent": "second"}
    run = {"status": "completed", "step": None, "next_at": None, "ended_at": now}
    return records, {"patch": patch, **run}


def baseline_enrol(engine: Engine, flow_id: int, now: datetime) -> None:
    params = {
        "flow": flow_id,
        "now": now,
        "state": json_text({"trigger": {"source": "api"}}),
        "detail": json_text({"source": "api", "entry_key": ""}),
    }
    with engine.begin() as conn:
        for statement in ENROL[engine.dialect.name]:
            conn.execute(_timed_text(statement), params)


def _timed_text(sql: str) -> Any:
    return text(sql).bindparams(
        bindparam("now", type_=UTCDateTime()),
        *(
            bindparam(name, type_=UTCDateTime())
            for name in ("next_at", "ended_at")
            if f":{name}" in sql
        ),
    )


def baseline_phase(
    engine: Engine,
    flow_id: int,
    now: datetime,
    batch: int,
    step: tuple[str, str],
    phase: Phase,
    done: Callable[[int], None],
) -> int:
    """Per batch: claim, ledger rows, history rows, runs updated (the baseline's work)."""
    pg = engine.dialect.name == "postgresql"
    records, run = phase
    claim = _timed_text(CLAIM[engine.dialect.name])
    send = _timed_text(send_sql(pg, *step))
    history = _timed_text(history_sql(pg, len(records)))
    update = _timed_text(update_sql(pg, ended=run["ended_at"] is not None))
    values: dict[str, Any] = {"now": now}
    for i, (step_id, action, first, detail) in enumerate(records):
        values |= {f"s{i}": step_id, f"a{i}": action, f"f{i}": first, f"d{i}": json_text(detail)}
    changes = {**run, "patch": json_text(run["patch"]), "now": now}
    total = 0
    while True:
        with engine.begin() as conn:
            ids = conn.scalars(claim, {"flow": flow_id, "now": now, "batch": batch}).all()
            if ids:
                key: Any = "{" + ",".join(map(str, ids)) + "}" if pg else json_text(ids)
                conn.execute(send, {"now": now, "ids": key})
                conn.execute(history, {**values, "ids": key})
                conn.execute(update, {**changes, "ids": key})
        total += len(ids)
        done(len(ids))
        if len(ids) < batch:
            return total


# -- measuring ----------------------------------------------------------------------------


class Measured:
    """Wall and CPU seconds of this process for one phase."""

    def __init__(self) -> None:
        self.seconds = self.cpu = 0.0


@contextmanager
def measured() -> Iterator[Measured]:
    out = Measured()
    started, cpu = time.perf_counter(), _cpu()
    yield out
    out.seconds, out.cpu = time.perf_counter() - started, _cpu() - cpu


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux: `echo 5 > /proc/self/clear_refs`)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process, MB."""
    status = Path("/proc/self/status").read_text()
    values = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in status.splitlines()
        if line.startswith(("VmRSS:", "VmHWM:"))
    }
    if not values:  # not Linux: ru_maxrss is KB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak
    return values["VmRSS"], values["VmHWM"]


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def phase(label: str, total: int, work: Callable[[Callable[[int], None]], int]) -> Measured:
    with progress() as bar, measured() as m:
        task = bar.add_task(label, total=total)
        done = work(lambda n: bar.advance(task, n))
    if done != total:
        raise RuntimeError(f"{label}: {done:,} of {total:,}")
    return m


# -- one engine ---------------------------------------------------------------------------


def run_engine(name: str, url: str, args: argparse.Namespace) -> None:
    n: int = args.contacts
    engine = common.fresh_database(url)
    settings = Settings(database_url=url)
    if args.batch_size:
        settings = settings.model_copy(update={"flow_batch_size": args.batch_size})
    batch = settings.flow_batch_size
    clock = FakeClock()
    start = clock.now()
    console.print(f"[bold]{name}[/]: {n:,} contacts, batches of {batch:,}; load {load()}")
    with measured() as made:
        create_contacts(engine, n, start)
    flow_row = apply_flow(engine, clock)
    console.print(f"  {n:,} contacts created in {made.seconds:.1f} s")

    clean_peak = reset_peak_rss()  # ours first, in this fresh process: its RSS is its own

    def enrol(done: Callable[[int], None]) -> int:
        got = enrol_ours(engine, clock, flow_row)
        done(got)
        return got

    ours_enrol = phase("ours: enrol", n, enrol)
    ours_first = phase("ours: first steps", n, lambda d: advance_ours(engine, clock, settings, d))
    clock.advance(WAIT)
    ours_timers = phase("ours: timers fired", n, lambda d: advance_ours(engine, clock, settings, d))
    ours_counts = counts(engine)
    rss, peak = rss_mb()
    reset(engine)

    def enrol_base(done: Callable[[int], None]) -> int:
        baseline_enrol(engine, flow_row.id, start)
        done(n)
        return n

    base_enrol = phase("baseline: enrol", n, enrol_base)
    base_first = phase(
        "baseline: first steps",
        n,
        lambda done: baseline_phase(
            engine, flow_row.id, start, batch, ("first", "t"), first_phase(start), done
        ),
    )
    later = start + WAIT
    base_timers = phase(
        "baseline: timers fired",
        n,
        lambda done: baseline_phase(
            engine, flow_row.id, later, batch, ("second", "t2"), second_phase(later), done
        ),
    )
    base_counts = counts(engine)
    if ours_counts != base_counts or ours_counts["completed"] != n:
        raise RuntimeError(f"rows differ: ours {ours_counts}, baseline {base_counts}")
    report(name, n, batch, (ours_enrol, ours_first, ours_timers),
           (base_enrol, base_first, base_timers), ours_counts, (rss, peak, clean_peak))  # fmt: skip
    engine.dispose()


def report(
    name: str,
    n: int,
    batch: int,
    ours: tuple[Measured, Measured, Measured],
    base: tuple[Measured, Measured, Measured],
    rows: dict[str, int],
    memory: tuple[float, float, bool],
) -> None:
    (o_enrol, o_first, o_timers), (b_enrol, b_first, b_timers) = ours, base
    rss, peak, clean = memory
    lines = [
        ("enrol (runs/s)", n, o_enrol, b_enrol),
        ("first steps (runs/s)", n, o_first, b_first),
        ("timers fired (runs/s)", n, o_timers, b_timers),
    ]
    for label, count, o, b in lines:
        ours_rate, base_rate = common.rate(count, o.seconds), common.rate(count, b.seconds)
        console.print(
            f"  {label:<22} ours {ours_rate:>9,.0f} ({o.seconds:6.1f} s, CPU {o.cpu:6.1f} s)"
            f"  baseline {base_rate:>9,.0f} ({b.seconds:6.1f} s)  ratio {ours_rate / base_rate:.2f}"
        )
    steps_first = common.rate(2 * n, o_first.seconds)
    steps_timers = common.rate(n, o_timers.seconds)
    enrol_and_first = o_enrol.seconds + o_first.seconds
    console.print(
        f"  steps entered/s: {steps_first:,.0f} (send + wait), {steps_timers:,.0f} (send); "
        f"enrol + first step {enrol_and_first:.0f} s; timers {o_timers.seconds:.0f} s"
    )
    console.print(
        f"  worker RSS {rss:.0f} MB now, peak {peak:.0f} MB"
        f"{'' if clean else ' (peak of the whole benchmark process)'}; rows: "
        f"{rows['flow_runs']:,} runs, {rows['messages']:,} messages, "
        f"{rows['flow_run_steps']:,} flow_run_steps; load {load()}"
    )
    console.print(
        common.markdown_row(
            [
                common.today(),
                name,
                f"{n:,}",
                f"{batch:,}",
                *(
                    f"{common.rate(n, o.seconds):,.0f} / {common.rate(n, b.seconds):,.0f} / "
                    f"{common.rate(n, o.seconds) / common.rate(n, b.seconds):.2f}"
                    for o, b in ((o_enrol, b_enrol), (o_first, b_first), (o_timers, b_timers))
                ),
                f"{enrol_and_first:.0f}",
                f"{o_timers.seconds:.0f}",
                f"{peak:.0f}",
                f"{common.machine()}, load {load()}",
            ]
        ),
        soft_wrap=True,
    )


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench engine", description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--engine", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="runs per transaction (default: setting)"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("TIDINGS_BENCH_ENGINE_DATABASE_URL", DEFAULT_PG_URL),
        help="PostgreSQL database (created if missing; its tables are emptied)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
    args = parse(argv)
    names = args.engine.split(",")
    if len(names) > 1:  # each engine in a fresh process: its RSS is its own
        for name in names:
            command = [sys.executable, "-m", "bench.engine", *argv, "--engine", name]
            subprocess.run(command, check=True, timeout=6 * 3600)
        return
    with tempfile.TemporaryDirectory(prefix="tidings-bench-engine-") as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'engine.db'}", "postgresql": args.pg_url}
        run_engine(names[0], urls[names[0]], args)


if __name__ == "__main__":
    main(sys.argv[1:])
