"""Worker throughput: how fast the worker applies the event log to contacts (identify ->
profile, every event linked to its contact), beside hand-written set-based SQL that does
the bare minimum of the same work (create one contact per user from its identify, link
every event) on the same rows in the same database and run.

    python -m bench apply_events
    python -m bench.apply_events --events 100000 --users 10000 --engines sqlite

The baseline validates nothing, merges nothing and keeps no cursor, so it is a floor for
the time the work needs, not a competitor doing the same checks."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, text

from bench import common
from tidings.clock import FakeClock
from tidings.config import Settings
from tidings.db import tables
from tidings.events import apply

BASELINE_SQL = {
    "postgresql": [
        """INSERT INTO contacts (external_id, email, attributes, score, created_at, updated_at)
           SELECT DISTINCT ON (user_id) user_id, lower(properties->>'email'), '{}', 0,
                  now(), now()
           FROM events WHERE type = 'identify' ORDER BY user_id, id DESC""",
        """UPDATE events SET contact_id = c.id FROM contacts c
           WHERE c.external_id = events.user_id""",
    ],
    "sqlite": [
        """INSERT INTO contacts (external_id, email, attributes, score, created_at, updated_at)
           SELECT user_id, lower(json_extract(properties, '$.email')), '{}', 0,
                  datetime('now'), datetime('now')
           FROM events WHERE type = 'identify' GROUP BY user_id""",
        """UPDATE events SET contact_id =
             (SELECT c.id FROM contacts c WHERE c.external_id = events.user_id)""",
    ],
}


def make_rows(events: int, users: int, clock: FakeClock) -> list[dict[str, Any]]:
    """One identify per user (email, name, plan), then track events spread over users."""
    now = clock.now()
    context = {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "192.0.2.1"}
    rows = []
    for i in range(events):
        user = i % users
        identify = i < users
        rows.append(
            {
                "message_id": f"m{i}",
                "type": "identify" if identify else "track",
                "name": None if identify else "Product Viewed",
                "user_id": f"user-{user}",
                "anonymous_id": None,
                "properties": (
                    {"email": f"user{user}@example.com", "name": f"User {user}", "plan": "pro"}
                    if identify
                    else {"sku": f"SKU-{i % 500}", "price": 19.99, "currency": "EUR"}
                ),
                "context": context,
                "timestamp": now,
                "received_at": now,
                "sent_at": now,
                "source": "bench",
            }
        )
    return rows


def load(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(tables.events), rows[start : start + 5000])


def baseline(engine: Engine) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in BASELINE_SQL[engine.dialect.name]:
            conn.execute(text(statement))
    return time.perf_counter() - started


def unapply(engine: Engine) -> None:
    """Back to 'nothing applied yet': events unlinked, no contacts, no cursor."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE events SET contact_id = NULL"))
        for table in ("contact_anonymous_ids", "contact_tags", "contacts", "worker_cursors"):
            conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - our table names


def ours(engine: Engine, settings: Settings, clock: FakeClock) -> tuple[float, int]:
    started = time.perf_counter()
    done = 0
    while applied := apply.process_pending(engine, clock, settings):
        done += applied
    return time.perf_counter() - started, done


def run_engine(name: str, url: str, args: argparse.Namespace) -> None:
    engine = common.fresh_database(url)
    settings = Settings(database_url=url)
    clock = FakeClock()
    load(engine, make_rows(args.events, args.users, clock))
    base_seconds = baseline(engine)
    unapply(engine)
    our_seconds, done = ours(engine, settings, clock)
    assert done == args.events, f"applied {done} of {args.events}"
    our_rate = common.rate(done, our_seconds)
    base_rate = common.rate(args.events, base_seconds)
    print(
        f"{name}: worker {our_rate:,.0f} events/s; hand-written SQL {base_rate:,.0f} "
        f"events/s; ratio {our_rate / base_rate:.2f}"
    )
    print(
        common.markdown_row(
            [
                common.today(),
                name,
                f"{args.events:,}",
                f"{args.users:,}",
                f"{our_rate:,.0f}",
                f"{base_rate:,.0f}",
                f"{our_rate / base_rate:.2f}",
                common.machine(),
            ]
        )  # fmt: skip
    )
    engine.dispose()


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.apply_events", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}", "postgresql": common.pg_url()}
        for name in args.engines.split(","):
            run_engine(name, urls[name], args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
