"""CSV import: a Mailchimp-style export (1,000,000 rows by default) imported through the same
domain code as `tidings contacts import`, on SQLite and PostgreSQL, beside a raw bulk insert
of the same prepared rows (PostgreSQL COPY; SQLite executemany in one transaction).

    python -m bench import_contacts             # 1M rows, both engines
    python -m bench.import_contacts --rows 50000 --engines sqlite

PostgreSQL: TIDINGS_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/
tidings_bench), created with `createdb` when missing; its tables are emptied (bench/common.py).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench import common
from tidings.clock import SystemClock
from tidings.contacts import importer

HEADER = [
    "Email Address",
    "First Name",
    "Last Name",
    "Phone Number",
    "MEMBER_RATING",
    "OPTIN_TIME",
    "LATITUDE",
    "LONGITUDE",
    "TIMEZONE",
    "CC",
    "LEID",
    "TAGS",
]
FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eva", "Femi", "Grace", "Hiro", "Ines", "Jamal"]
LAST = ["Lee", "Müller", "Okafor", "Rossi", "Silva", "Smith", "Tanaka", "Nguyen", "Kowalski"]
ZONES = [("Europe/Berlin", "DE"), ("America/New_York", "US"), ("Asia/Tokyo", "JP"), ("", "")]
TAGS = ["Customer", "VIP", "Newsletter", "Black Friday", "Webinar"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """A Mailchimp 'subscribed members' export; 1 in 4 rows has a phone, 1 in 500 is bad."""
    rnd = random.Random(seed)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for i in range(rows):
            zone, cc = rnd.choice(ZONES)
            email = f"user{i}.{rnd.randrange(10**6)}@example{i % 97}.com"
            if i % 500 == 499:
                email = email.replace("@", "")  # a reject
            tags = ",".join(f'"{t}"' for t in rnd.sample(TAGS, rnd.randrange(3)))
            writer.writerow(
                [
                    email,
                    rnd.choice(FIRST),
                    rnd.choice(LAST),
                    f"+4930{rnd.randrange(10**7, 10**8)}" if i % 4 == 0 else "",
                    rnd.randrange(1, 6),
                    (start + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S"),
                    f"{rnd.uniform(-90, 90):.4f}",
                    f"{rnd.uniform(-180, 180):.4f}",
                    zone,
                    cc,
                    rnd.randrange(10**9),
                    tags,
                ]
            )


def prepared_rows(path: Path) -> Iterator[tuple[Any, ...]]:
    """The rows as the raw insert gets them: already normalised, attributes as JSON text."""
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.reader(file)
        next(reader)
        for cells in reader:
            if "@" not in cells[0]:
                continue
            attributes = {"member_rating": cells[4], "optin_time": cells[5]}
            attributes |= {"latitude": cells[6], "longitude": cells[7], "leid": cells[10]}
            tags = [t.strip('"') for t in cells[11].split(",") if t]
            profile = (cells[0].lower(), cells[3] or None, cells[1], cells[2])
            yield (*profile, cells[8] or None, cells[9] or None, json.dumps(attributes), tags)


def fresh_engine(url: str) -> Engine:
    """A migrated, empty database at `url` (SQLite file or PostgreSQL, created if missing)."""
    return common.fresh_database(url)


def helper_cpu() -> float:
    """CPU seconds used so far by this process's descendants: the importer's helper process
    runs under the multiprocessing fork server, which collects its times when it ends."""
    total = 0.0
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
            if pid != os.getpid():
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def timed(label: str, rows: int, work: Callable[[], object]) -> float:
    """Run `work`, print rows/s and the CPU seconds of this process and of the importer's
    helper process (steadier than rows/s on a busy box; PostgreSQL's own work excluded)."""
    began, cpu, helper = time.perf_counter(), time.process_time(), helper_cpu()
    work()
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    helper = helper_cpu() - helper
    speed = common.rate(rows, seconds)
    print(
        f"  {label:<34} {rows:>9,} rows {seconds:7.1f} s {speed:>9,.0f} rows/s"
        f"  (cpu {cpu:5.1f} s here + {helper:5.1f} s helper"
        f" = {(cpu + helper) / rows * 1e6:4.0f} us/row; load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    return speed


def baseline_sqlite(engine: Engine, path: Path) -> None:
    """executemany of the prepared rows (and their tags) in one transaction."""
    now = datetime.now(UTC).isoformat(" ")
    contacts, tags = [], []
    for n, row in enumerate(prepared_rows(path), start=1):
        contacts.append((n, *row[:-1], now, now))
        tags += [(n, t) for t in row[-1]]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.executemany(
            "INSERT INTO contacts (id, email, phone, first_name, last_name, timezone, country,"
            " attributes, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            contacts,
        )
        cursor.executemany("INSERT INTO contact_tags (contact_id, tag) VALUES (?,?)", tags)
        cursor.execute("COMMIT")
    finally:
        raw.close()


def baseline_postgresql(engine: Engine, path: Path) -> None:
    """COPY of the prepared rows (and their tags) in one transaction."""
    now = datetime.now(UTC)
    raw = engine.raw_connection()
    try:
        cursor: Any = raw.cursor()
        columns = "id, email, phone, first_name, last_name, timezone, country, attributes,"
        with cursor.copy(f"COPY contacts ({columns} created_at, updated_at) FROM STDIN") as copy:
            tags = []
            for n, row in enumerate(prepared_rows(path), start=1):
                copy.write_row((n, *row[:-1], now, now))
                tags += [(n, t) for t in row[-1]]
        with cursor.copy("COPY contact_tags (contact_id, tag) FROM STDIN") as copy:
            for pair in tags:
                copy.write_row(pair)
        raw.commit()
    finally:
        raw.close()


def run_engine(name: str, url: str, csv_path: Path, rows: int) -> None:
    print(f"{name}:", flush=True)
    engine = fresh_engine(url)
    job = importer.ImportJob(csv_path, rejects_path=csv_path.with_name(f"rejects-{name}.csv"))
    clock = SystemClock()

    def run_import() -> None:
        importer.import_csv(engine, clock, job)

    ours = timed("tidings contacts import (create)", rows, run_import)
    again = timed("tidings contacts import (update)", rows, run_import)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM contacts")).scalar()
    engine.dispose()
    if name == "sqlite":  # a new file, so the baseline starts from the same empty state
        url = url.replace("bench.db", "baseline.db")
    engine = fresh_engine(url)
    raw_insert = baseline_postgresql if name == "postgresql" else baseline_sqlite
    base_name = "COPY" if name == "postgresql" else "executemany"
    base = timed(f"baseline ({base_name})", rows, lambda: raw_insert(engine, csv_path))
    engine.dispose()
    print(
        f"  contacts stored: {stored:,}; ours / baseline = {ours / base:.2f} (create), "
        f"{again / base:.2f} (update)",
        flush=True,
    )
    cells = [common.today(), name, f"{rows:,}", f"{ours:,.0f}", f"{again:,.0f}"]
    cells += [f"{base:,.0f}", f"{ours / base:.2f}", common.machine()]
    print("  " + common.markdown_row(cells), flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.import_contacts")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        csv_path = Path(tmp) / "mailchimp.csv"
        began = time.perf_counter()
        generate(csv_path, args.rows)
        size = csv_path.stat().st_size / 1e6
        print(
            f"{args.rows:,} rows, {size:.0f} MB generated in {time.perf_counter() - began:.1f} s"
            f" ({os.cpu_count()} cores)",
            flush=True,
        )
        for name in args.engines.split(","):
            url = f"sqlite:///{tmp}/bench.db" if name == "sqlite" else common.pg_url()
            run_engine(name, url, csv_path, args.rows)


if __name__ == "__main__":
    main(sys.argv[1:])
