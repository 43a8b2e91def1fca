"""Ingest throughput: realistic Segment track events through `POST /v1/batch` (100 per batch)
against the API alone in 2 uvicorn processes (`uvicorn --factory
tidings.api.app:app_from_env --workers 2`, what `tidings serve --no-worker --workers 2`
runs), beside a raw multi-row INSERT of the same
rows into the same database, on SQLite and PostgreSQL.

    python -m bench ingest                      # defaults
    python -m bench.ingest --events 50000 --engines postgresql --concurrency 8

The load comes from this process: keep-alive connections in threads, bodies serialised
before the clock starts. The server's peak memory comes from /proc (VmHWM)."""

from __future__ import annotations

import argparse
import base64
import http.client
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, insert

from bench import common
from tidings.db import tables
from tidings.events import ingest, spec

PRODUCTS = [
    ("G-32", "Games", "Monopoly: 3rd Edition", "Hasbro", 18.99),
    ("T-07", "Toys", "Wooden Train Set", "Brio", 49.5),
    ("B-11", "Books", "The Pragmatic Programmer", "Addison-Wesley", 39.0),
    ("A-90", "Apparel", "Merino Crew Sweater", "Icebreaker", 129.0),
]
PAGES = ["/", "/shop", "/shop/games", "/product/g-32", "/cart", "/checkout"]
AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
]


def track_event(rnd: random.Random, user: int, at: datetime) -> dict[str, Any]:
    """One analytics.js-like track call (~700 bytes): 10 properties, a full context."""
    sku, category, name, brand, price = rnd.choice(PRODUCTS)
    path = rnd.choice(PAGES)
    ordered = rnd.random() < 0.2
    properties: dict[str, Any] = {
        "product_id": f"{sku}-{rnd.randrange(1000)}",
        "sku": sku,
        "category": category,
        "name": name,
        "brand": brand,
        "price": price,
        "quantity": rnd.randint(1, 3),
        "currency": "EUR",
        "position": rnd.randint(1, 24),
        "url": f"https://shop.example.com{path}",
    }
    if ordered:
        properties |= {"order_id": f"o-{rnd.randrange(10**9)}", "total": round(price * 1.19, 2)}
    return {
        "type": "track",
        "event": "Order Completed" if ordered else "Product Viewed",
        "userId": f"user-{user}",
        "anonymousId": str(uuid.UUID(int=user * 7919 + 1)),
        "messageId": str(uuid.uuid4()),
        "originalTimestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "properties": properties,
        "context": {
            "ip": f"203.0.{rnd.randrange(256)}.{rnd.randrange(256)}",
            "library": {"name": "analytics.js", "version": "next-1.72.0"},
            "locale": "de-DE",
            "page": {"path": path, "referrer": "https://www.google.com/", "title": name},
            "userAgent": rnd.choice(AGENTS),
            "timezone": "Europe/Berlin",
        },
    }


def make_bodies(events: int, per_batch: int, seed: int = 7) -> list[bytes]:
    """`events` distinct events as `/v1/batch` bodies of `per_batch`, already serialised."""
    rnd = random.Random(seed)
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    bodies = []
    for first in range(0, events, per_batch):
        at = start + timedelta(milliseconds=first)
        calls = [
            track_event(rnd, rnd.randrange(20_000), at + timedelta(milliseconds=i))
            for i in range(min(per_batch, events - first))
        ]
        sent = (at + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        bodies.append(orjson.dumps({"batch": calls, "sentAt": sent}))
    return bodies


# -- our figure: HTTP ----------------------------------------------------------------------


def post_all(url: str, key: str, bodies: Sequence[bytes], concurrency: int) -> float:
    """POST every body to /v1/batch from `concurrency` threads; returns the seconds taken."""
    host, port = url.removeprefix("http://").split(":")
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
        "Content-Type": "application/json",
    }
    failures: list[str] = []

    def client(mine: Sequence[bytes]) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            for body in mine:
                conn.request("POST", "/v1/batch", body, headers)
                answer = conn.getresponse()
                text = answer.read()
                if answer.status != 200:
                    failures.append(f"{answer.status} {text[:200]!r}")
                    return
        finally:
            conn.close()

    took = _timed_threads(client, [bodies[i::concurrency] for i in range(concurrency)])
    if failures:
        raise RuntimeError(f"ingest failed: {failures[0]}")
    return took


def _timed_threads(work: Callable[[Any], None], shares: Sequence[Any]) -> float:
    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=3600)
    return time.perf_counter() - started


# -- the baseline: the same rows, raw --------------------------------------------------------


def same_rows(bodies: Sequence[bytes], source: str) -> list[list[spec.Row]]:
    """The rows ingest stores for `bodies` (built before the clock starts)."""
    env = spec.Envelope(datetime.now(UTC), source)
    return [ingest.rows(orjson.loads(b), "batch", env, 32 * 1024) for b in bodies]


COLUMNS = ", ".join(f'"{c}"' for c in ingest.COLUMNS)
PG_TYPES = {
    "properties": "jsonb",
    "context": "jsonb",
    "timestamp": "timestamptz",
    "received_at": "timestamptz",
    "sent_at": "timestamptz",
}


def pg_values(raw: Any, batch: list[spec.Row]) -> None:
    """One prepared multi-row `INSERT ... VALUES (...), (...)` of 100 rows (psycopg)."""
    from psycopg.types.json import Jsonb

    one = "(" + ", ".join(["%s"] * len(ingest.COLUMNS)) + ")"
    sql = f"INSERT INTO events ({COLUMNS}) VALUES " + ", ".join([one] * len(batch))  # noqa: S608
    params: list[Any] = []
    for row in batch:
        params.extend(
            Jsonb(row[c]) if c in ("properties", "context") else row[c] for c in ingest.COLUMNS
        )
    with raw.cursor() as cursor:
        cursor.execute(sql, params, prepare=True)
    raw.commit()


def pg_recordset(raw: Any, batch: list[spec.Row]) -> None:
    """One `INSERT ... SELECT FROM jsonb_to_recordset(%s)`: the statement ingest uses."""
    types = ", ".join(f'"{c}" {PG_TYPES.get(c, "text")}' for c in ingest.COLUMNS)
    sql = (
        f"INSERT INTO events ({COLUMNS}) "  # noqa: S608 - our column names
        f"SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r({types})"
    )
    with raw.cursor() as cursor:
        cursor.execute(sql, [orjson.dumps(batch).decode()], prepare=True)
    raw.commit()


def sqlite_values(engine: Engine, batch: list[spec.Row]) -> None:
    """One multi-row `INSERT ... VALUES` of 100 rows (SQLAlchemy Core)."""
    with engine.begin() as conn:
        conn.execute(insert(tables.events).values(batch))


def sqlite_executemany(engine: Engine, batch: list[spec.Row]) -> None:
    """One prepared INSERT run for each of the 100 rows (sqlite3 executemany)."""
    with engine.begin() as conn:
        conn.execute(insert(tables.events), batch)


def baseline(
    engine: Engine, method: Callable[[Any, list[spec.Row]], None], batches: list[list[spec.Row]],
    concurrency: int,
) -> float:  # fmt: skip
    """Seconds to insert `batches` with `method`, one transaction per batch."""
    common.empty_tables(engine, ["events"])
    if engine.dialect.name == "sqlite":
        return _timed_threads(lambda mine: [method(engine, b) for b in mine], [batches])

    def insert_share(mine: list[list[spec.Row]]) -> None:
        raw = engine.raw_connection()
        try:
            for batch in mine:
                method(raw.driver_connection, batch)
        finally:
            raw.close()

    return _timed_threads(insert_share, [batches[i::concurrency] for i in range(concurrency)])


# -- one engine ------------------------------------------------------------------------------


def run_engine(name: str, url: str, args: argparse.Namespace) -> None:
    events = args.events if name == "postgresql" else args.sqlite_events
    engine = common.fresh_database(url)
    key = common.create_key(engine)
    bodies = make_bodies(events, args.batch)
    size = sum(len(b) for b in bodies) / events
    with common.serve(url, common.uvicorn_factory(args.workers)) as server:
        post_all(server.url, key, make_bodies(20 * args.batch, args.batch, seed=1), 4)  # warm
        common.empty_tables(engine, ["events"])
        took = post_all(server.url, key, bodies, args.concurrency)
    ours = common.rate(events, took)
    stored = _count(engine)
    assert stored == events, f"{stored} events stored, {events} sent"

    batches = same_rows(bodies, "tid_bench")
    methods = (
        {"VALUES": pg_values, "jsonb_to_recordset": pg_recordset}
        if name == "postgresql"
        else {"VALUES": sqlite_values, "executemany": sqlite_executemany}
    )
    raw = {
        label: common.rate(events, baseline(engine, method, batches, args.concurrency))
        for label, method in methods.items()
    }
    best = max(raw.values())
    engine.dispose()
    print(f"\n{name}: {events} events, {size:.0f} bytes each, {args.batch} per batch, "
          f"{args.concurrency} client threads, {args.workers} server processes")  # fmt: skip
    print(f"  ours (HTTP /v1/batch):   {ours:10,.0f} events/s")
    for label, value in raw.items():
        print(f"  raw INSERT {label + ':':20} {value:10,.0f} events/s")
    print(f"  ratio (ours / best raw): {ours / best:10.2f}")
    print(f"  server peak RSS: {server.total_peak_mb:.0f} MB all processes, "
          f"{server.largest_peak_mb:.0f} MB largest")  # fmt: skip
    print(
        common.markdown_row(
            [
                common.today(),
                name,
                f"{events:,}",
                f"{ours:,.0f}",
                " / ".join(f"{v:,.0f}" for v in raw.values()),
                f"{ours / best:.2f}",
                f"{server.total_peak_mb:.0f} ({server.largest_peak_mb:.0f})",
                common.machine(),
            ]
        )  # fmt: skip
    )


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one())


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events on PostgreSQL")
    parser.add_argument("--sqlite-events", type=int, default=50_000, help="events on SQLite")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
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
