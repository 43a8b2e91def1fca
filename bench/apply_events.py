"""Worker throughput: how fast the worker applies the event log to contacts (identify ->
profile, every event linked to its contact), beside hand-written set-based SQL that does
the bare minimum of the same work (create one contact per user from its identify, link
every event) on the same rows in the same database and run.

    python -m bench apply_events
    python -m bench.apply_events --events 100000 --users 10000 --engines sqlite
    python -m bench.apply_events --merges 0.25   # a quarter of the users log in on a new device

The typical log: one identify per user, then track events spread over the users. With
`--merges F`, a share F of the users (known from their identify) first browse anonymously
on a new device (track events with only an `anonymousId`: an anonymous contact) and then
log in there (tracks with both ids): the worker merges the anonymous contact into theirs.

The baseline validates nothing, merges nothing and keeps no cursor, so it is a floor for
the time the work needs, not a competitor doing the same checks."""

from __future__ import annotations

import argparse
import os
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


def make_rows(
    events: int, users: int, clock: FakeClock, merges: float = 0.0
) -> list[dict[str, Any]]:
    """One identify per user (email, name, plan), then track events spread over users; a
    share `merges` of the users sends its first half of tracks anonymously, then logs in."""
    now = clock.now()
    context = {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "192.0.2.1"}
    every = round(1 / merges) if merges > 0 else 0
    login_at = users + (events - users) // 2
    rows = []
    for i in range(events):
        user = i % users
        identify = i < users
        user_id: str | None = f"user-{user}"
        anonymous_id = None
        if not identify and every and user % every == 0:
            anonymous_id = f"device-{user}"
            user_id = None if i < login_at else user_id
        rows.append(
            {
                "message_id": f"m{i}",
                "type": "identify" if identify else "track",
                "name": None if identify else "Product Viewed",
                "user_id": user_id,
                "anonymous_id": anonymous_id,
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
    """Back to 'nothing applied yet': events unlinked, no contacts, no cursor. On
    PostgreSQL the dead row versions that leaves (every event updated twice by now) are
    vacuumed away: the worker sets each event's contact once, as the baseline did."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE events SET contact_id = NULL"))
        for table in ("contact_anonymous_ids", "contact_tags", "contacts", "worker_cursors"):
            conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - our table names
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM events, contacts, contact_anonymous_ids"))


def ours(engine: Engine, settings: Settings, clock: FakeClock, expected: int) -> tuple[float, int]:
    """Apply the whole log. A round may apply nothing while a writing transaction elsewhere
    on the server holds the log back (see tidings.events.cursor): go on until all is done."""
    started = time.perf_counter()
    done = 0
    deadline = time.monotonic() + 3600
    while done < expected and time.monotonic() < deadline:
        done += apply.process_pending(engine, clock, settings)
    return time.perf_counter() - started, done


def merged_contacts(engine: Engine) -> int:
    """Contacts that are left: one per user when every anonymous contact was merged."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM contacts")).scalar_one())


def load_average() -> str:
    """The 1- and 5-minute load averages: other work on a shared machine skews figures."""
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def run_engine(name: str, url: str, args: argparse.Namespace) -> None:
    engine = common.fresh_database(url)
    settings = Settings(database_url=url)
    if args.batch_size:
        settings = settings.model_copy(update={"worker_batch_size": args.batch_size})
    clock = FakeClock()
    load(engine, make_rows(args.events, args.users, clock, args.merges))
    base_seconds = baseline(engine)
    unapply(engine)
    our_seconds, done = ours(engine, settings, clock, args.events)
    assert done == args.events, f"applied {done} of {args.events}"
    left = merged_contacts(engine)
    assert left == args.users, f"{left} contacts for {args.users} users"
    our_rate = common.rate(done, our_seconds)
    base_rate = common.rate(args.events, base_seconds)
    print(
        f"{name}: worker {our_rate:,.0f} events/s; hand-written SQL {base_rate:,.0f} "
        f"events/s; ratio {our_rate / base_rate:.2f}; merges {args.merges:.0%}; "
        f"batch {settings.worker_batch_size}; load {load_average()}"
    )
    print(
        common.markdown_row(
            [
                common.today(),
                name,
                f"{args.events:,}",
                f"{args.users:,}",
                f"{args.merges:.0%}",
                f"{our_rate:,.0f}",
                f"{base_rate:,.0f}",
                f"{our_rate / base_rate:.2f}",
                f"{common.machine()}, load {load_average()}",
            ]
        )  # fmt: skip
    )
    engine.dispose()


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.apply_events", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument(
        "--merges", type=float, default=0.0, help="share of users merged (0-1; default 0)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=0, help="events per transaction (default: setting)"
    )
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
