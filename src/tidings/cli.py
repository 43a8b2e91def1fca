"""The `tidings` command. Errors end with one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from tidings import errors, keys
from tidings import log as logging_setup
from tidings.cli_flows import flows_app
from tidings.clock import SystemClock
from tidings.config import Settings
from tidings.db import migrate
from tidings.db.engine import make_engine

app = typer.Typer(
    help="Tidings: self-hosted marketing automation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
contacts_app = typer.Typer(help="Contacts: CSV import and export.", no_args_is_help=True)
app.add_typer(contacts_app, name="contacts")
segments_app = typer.Typer(help="Segments: dynamic groups of contacts.", no_args_is_help=True)
app.add_typer(segments_app, name="segments")
app.add_typer(flows_app, name="flows")

console = Console()
err_console = Console(stderr=True)


def settings() -> Settings:
    return Settings()


@contextmanager
def database() -> Iterator[Engine]:
    """The configured database, closed when the command is done."""
    engine = make_engine(settings())
    try:
        yield engine
    finally:
        engine.dispose()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    worker: Annotated[bool, typer.Option(help="Run the worker in this process.")] = True,
    workers: Annotated[int, typer.Option(help="API processes (uvicorn workers).")] = 1,
) -> None:
    """Serve the HTTP API (and the worker, unless --no-worker)."""
    import uvicorn

    from tidings.api.app import create_app
    from tidings.worker import Worker

    config = settings()
    logging_setup.configure(config.log_level, config.log_format)
    engine = make_engine(config)
    if config.is_sqlite:
        migrate.upgrade(engine)
    background = Worker(config, engine, SystemClock()).start_thread() if worker else None
    try:
        if workers > 1:
            uvicorn.run(
                "tidings.api.app:app_from_env",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_config=None,
            )
        else:
            uvicorn.run(create_app(config, engine), host=host, port=port, log_config=None)
    finally:
        if background is not None:  # let the worker finish its transaction, then stop
            thread, stop = background
            stop.set()
            thread.join(timeout=30)
        engine.dispose()


@app.command("worker")
def run_worker() -> None:
    """Run the worker alone (add as many as you like on PostgreSQL). SIGTERM or Ctrl-C
    stops it once the batch in hand is committed."""
    import signal
    import threading

    from tidings.worker import Worker

    config = settings()
    logging_setup.configure(config.log_level, config.log_format)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    Worker(config, make_engine(config), SystemClock()).run_forever(stop)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the schema migrations up to REVISION (default: the newest)."""
    with database() as engine:
        migrate.upgrade(engine, revision)
    console.print(f"Database at revision {revision}.")


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="admin | write | read")],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
) -> None:
    """Create an API key and print it once (it is stored hashed)."""
    with database() as engine, engine.begin() as conn:
        key, secret = keys.create(conn, SystemClock(), scope, name)
    err_console.print(f"Created {key.scope} key {key.prefix}. It is shown once; keep it safe:")
    print(secret)


@keys_app.command("list")
def keys_list() -> None:
    """List the active keys (prefix, scope, name; never the secret)."""
    with database() as engine, engine.connect() as conn:
        rows = keys.list_keys(conn)
    table = Table("prefix", "scope", "name", "created")
    for row in rows:
        table.add_row(
            str(row["prefix"]), str(row["scope"]), str(row["name"]), str(row["created_at"])
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(prefix: str) -> None:
    """Revoke the key with PREFIX (it stops working within the key cache time)."""
    with database() as engine, engine.begin() as conn:
        keys.revoke(conn, SystemClock(), prefix)
    console.print(f"Revoked {prefix}.")


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Our errors as one line on stderr and exit code 2 (also under typer's CliRunner)."""
    try:
        yield
    except errors.TidingsError as exc:
        err_console.print(f"error: {exc.message}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None


@contacts_app.command("import")
def contacts_import(
    file: Annotated[Path, typer.Argument(help="CSV file (Mailchimp, HubSpot, our export...).")],
    list_key: Annotated[
        str | None, typer.Option("--list", help="Key of a list every contact joins.")
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="COLUMN=FIELD: a profile field, attributes.NAME, tags or ignore. Repeatable.",
        ),
    ] = None,
    rejects: Annotated[
        Path | None, typer.Option(help="Where bad rows go (default FILE.rejects.csv).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted import of FILE where it stopped.")
    ] = False,
) -> None:
    """Create or update contacts from a CSV file; bad rows go to a rejects file."""
    from tidings.contacts import importer

    with _one_line_errors():
        pairs = tuple(sorted(importer.parse_mapping(mapping or []).items()))
        job = importer.ImportJob(file, list_key, pairs, rejects)
        if not resume and importer.progress_file_exists(job):
            err_console.print(
                "An earlier import of this file stopped part-way; starting over (safe). "
                "Pass --resume to continue where it stopped.",
                highlight=False,
            )
        report = _run_import(job, resume)
    _print_import_report(report, job)


def _run_import(job: Any, resume: bool) -> Any:
    """The import under a progress bar; the first Ctrl-C stops after the current chunk."""
    import signal
    import threading

    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from tidings.contacts import importer

    stop = threading.Event()

    def on_sigint(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err_console.print("Stopping after the current chunk (Ctrl-C again to abort)...")

    previous = signal.signal(signal.SIGINT, on_sigint)
    bar = Progress(BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err_console)
    task = bar.add_task("import", total=job.path.stat().st_size if job.path.is_file() else 0)

    def show(done: int, _total: int) -> None:
        if not bar.live.is_started:  # only once a chunk is in: errors before stay one line
            bar.start()
        bar.update(task, completed=done)

    try:
        with database() as engine:
            return importer.import_csv(
                engine, SystemClock(), job, resume=resume, progress=show, should_stop=stop.is_set
            )
    finally:
        if bar.live.is_started:
            bar.stop()
        signal.signal(signal.SIGINT, previous)


def _print_import_report(report: Any, job: Any) -> None:
    resumed = f" (resumed at row {report.resumed_at_row})" if report.resumed_at_row else ""
    console.print(
        f"{report.rows} rows{resumed}: {report.created} created, {report.updated} updated, "
        f"{report.rejected} rejected.",
        highlight=False,
    )
    if report.rejected:
        console.print(f"Rejected rows, with reasons: {job.rejects}", highlight=False)
    if report.interrupted:
        console.print("Stopped early; run again with --resume to continue.", highlight=False)


@contacts_app.command("export")
def contacts_export(
    out: Annotated[Path | None, typer.Option(help="File to write (default: stdout).")] = None,
    list_key: Annotated[
        str | None, typer.Option("--list", help="Only contacts subscribed to this list.")
    ] = None,
) -> None:
    """Write contacts as CSV: profile fields, tags, one attributes.NAME column per key."""
    from tidings.contacts import exporter

    with _one_line_errors(), database() as engine:
        if out is None:
            count = exporter.export_csv(engine, sys.stdout, list_key=list_key)
        else:
            partial = out.with_name(f".{out.name}.part")
            with partial.open("w", encoding="utf-8", newline="") as file:
                count = exporter.export_csv(engine, file, list_key=list_key)
            partial.replace(out)
    err_console.print(f"Exported {count} contacts.", highlight=False)


@segments_app.command("list")
def segments_list() -> None:
    """List the segments with their member counts."""
    from tidings.segments import definitions

    with database() as engine, engine.connect() as conn:
        rows = definitions.list_all(conn)
    table = Table("key", "name", "members", "rebuilt")
    for row in rows:
        table.add_row(row["key"], row["name"], str(row["member_count"]), str(row["rebuilt_at"]))
    console.print(table)


@segments_app.command("apply")
def segments_apply(
    file: Annotated[Path, typer.Argument(help="JSON: one {key, name, rule} or a list of them.")],
) -> None:
    """Create or update segments from a JSON file (idempotent; a segment a rule refers to
    must come earlier in the file or exist already). All or nothing."""
    from tidings.segments import definitions

    with _one_line_errors():
        items = _read_json_items(file)
        with database() as engine, engine.begin() as conn:
            for item in items:
                key = definitions.check_key(item.get("key"))
                changes = {k: v for k, v in item.items() if k != "key"}
                exists = key in {row["key"] for row in definitions.list_all(conn)}
                if exists:
                    definitions.update_segment(conn, SystemClock(), key, changes)
                else:
                    definitions.create(conn, SystemClock(), item)
                console.print(f"{'Updated' if exists else 'Created'} segment {key}.")


def _read_json_items(file: Path) -> list[dict[str, Any]]:
    import json

    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise errors.InvalidInput(f"{file}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.InvalidInput(f"{file}: not valid JSON ({exc})") from None
    items = document if isinstance(document, list) else [document]
    if not all(isinstance(item, dict) for item in items):
        raise errors.InvalidInput(f"{file}: expected an object or a list of objects")
    return items


@segments_app.command("rebuild")
def segments_rebuild(key: str) -> None:
    """Re-evaluate a segment over every contact now (the worker also does this by itself)."""
    from tidings.segments import membership

    with _one_line_errors(), database() as engine, engine.begin() as conn:
        changes = membership.rebuild(conn, SystemClock(), key)
    console.print(f"Rebuilt {key}: {changes} membership changes.")


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps our errors and bad settings to one line and exit code 2."""
    from pydantic import ValidationError

    try:
        app(args=argv, prog_name="tidings", standalone_mode=True)
    except errors.TidingsError as exc:
        err_console.print(f"error: {exc.message}", highlight=False)
        sys.exit(2)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        err_console.print(f"error: setting {where}: {first['msg']}", highlight=False)
        sys.exit(2)
