"""`tidings flows ...`: apply flow definitions from files (kept in git, say), read them,
move them through their lifecycle, enrol contacts and read their figures. Errors end with
one line per problem on stderr and exit code 2."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from tidings import errors
from tidings.clock import SystemClock
from tidings.config import Settings
from tidings.db.engine import make_engine

flows_app = typer.Typer(
    help="Flows: journeys contacts take. Apply them from YAML/JSON files, move them "
    "through draft -> active <-> paused -> archived, enrol contacts, read their figures.",
    no_args_is_help=True,
)

console = Console()
err_console = Console(stderr=True)

#: The order `flows show` writes a definition's top-level keys in.
KEY_ORDER = ("key", "name", "description", "trigger", "entry", "exit_when", "goal", "settings")


@contextmanager
def _database() -> Iterator[Engine]:
    engine = make_engine(Settings())
    try:
        yield engine
    finally:
        engine.dispose()


def _fail(lines: list[str]) -> typer.Exit:
    for line in lines:
        err_console.print(line, highlight=False, markup=False, soft_wrap=True)
    return typer.Exit(2)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Our errors as one line on stderr and exit code 2 (also under typer's CliRunner)."""
    try:
        yield
    except errors.TidingsError as exc:
        raise _fail([f"error: {exc.message}"]) from None


@flows_app.command("apply")
def flows_apply(
    path: Annotated[Path, typer.Argument(help="A YAML or JSON file, or a directory of them.")],
    activate: Annotated[bool, typer.Option(help="Also make draft or paused flows active.")] = False,
) -> None:
    """Create or update flows from files (idempotent: an unchanged flow stays as it is; a
    changed one becomes a new version). Every file is checked first: if any is invalid,
    nothing is stored and each problem is printed as `file: path: message`."""
    from tidings.flows import build, store

    with _one_line_errors():
        items = build.read_path(path)
        problems = _problems(items)
        if problems:
            raise _fail(problems)
        with _database() as engine, engine.begin() as conn:
            applied = [
                store.apply(conn, SystemClock(), data, activate=activate) for _, data in items
            ]
    for (source, _), flow in zip(items, applied, strict=True):
        console.print(
            f"{source}: {flow['outcome']} {flow['key']} "
            f"(version {flow['version']}, {flow['status']})",
            highlight=False,
            markup=False,
        )
    if not items:
        err_console.print(f"No flow files in {path}.", highlight=False, markup=False)


def _problems(items: list[tuple[str, Any]]) -> list[str]:
    """Every problem with every file, one line each; and keys defined twice."""
    from tidings.flows import build

    problems: list[str] = []
    for source, data in items:
        try:
            build.load(data)
        except errors.InvalidInput as exc:
            problems += [f"{source}: {f.field}: {f.message}" for f in exc.fields] or [
                f"{source}: {exc.message}"
            ]
    keys = Counter(data.get("key") for _, data in items if isinstance(data, dict))
    for source, data in items:
        key = data.get("key") if isinstance(data, dict) else None
        if key is not None and keys[key] > 1:
            problems.append(f"{source}: key: flow {key!r} is defined in more than one file")
    return problems


@flows_app.command("list")
def flows_list(
    status: Annotated[
        str | None, typer.Option(help="Only flows in this status (draft, active...).")
    ] = None,
) -> None:
    """List the flows with their status, version, trigger and runs in progress."""
    from tidings.flows import store

    with _one_line_errors(), _database() as engine, engine.connect() as conn:
        rows = store.list_all(conn, status)
    table = Table("key", "name", "status", "version", "trigger", "live runs")
    for row in rows:
        trigger = row["trigger_type"] + (
            f" ({row['trigger_event']})" if row["trigger_event"] else ""
        )
        table.add_row(
            row["key"],
            row["name"],
            row["status"],
            str(row["version"]),
            trigger,
            str(row["live_runs"]),
        )
    console.print(table)


@flows_app.command("show")
def flows_show(
    key: str,
    version: Annotated[int | None, typer.Option(help="This version (default: newest).")] = None,
    output: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
) -> None:
    """Print a flow's definition (as stored: every step with its id) with its status. The
    output can be applied again as it is."""
    from tidings.flows import store

    if output not in ("yaml", "json"):
        raise _fail([f"error: --format: must be yaml or json, not {output!r}"])
    with _one_line_errors(), _database() as engine, engine.connect() as conn:
        flow = store.get(conn, key, version)
    status = (
        f"{flow['key']}: {flow['status']}, version {flow['shown_version']} of "
        f"{flow['version']}, {flow['live_runs']} runs in progress"
    )
    document = readable(flow["definition"])
    if output == "json":
        err_console.print(status, highlight=False, markup=False)
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(f"# {status}")
        print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), end="")


def readable(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition with its top-level keys in the usual order and each step's `id`
    first (PostgreSQL hands JSON objects back with their keys reordered)."""
    ordered = {k: definition[k] for k in KEY_ORDER if k in definition}
    ordered.update({k: v for k, v in definition.items() if k not in ordered})
    result: dict[str, Any] = _ids_first(ordered)
    return result


def _ids_first(value: Any) -> Any:
    if isinstance(value, list):
        return [_ids_first(v) for v in value]
    if isinstance(value, dict):
        first = {"id": value["id"]} if "id" in value else {}
        return first | {k: _ids_first(v) for k, v in value.items() if k != "id"}
    return value


def _lifecycle(action: str, key: str) -> dict[str, Any]:
    from tidings.flows import lifecycle

    with _one_line_errors(), _database() as engine, engine.begin() as conn:
        flow: dict[str, Any] = getattr(lifecycle, action)(conn, SystemClock(), key)
    console.print(f"Flow {key} is {flow['status']}.", highlight=False, markup=False)
    return flow


@flows_app.command("activate")
def flows_activate(key: str) -> None:
    """draft or paused -> active: the trigger starts runs and runs advance."""
    _lifecycle("activate", key)


@flows_app.command("pause")
def flows_pause(key: str) -> None:
    """active -> paused: no new runs; runs hold where they are, nothing is sent."""
    _lifecycle("pause", key)


@flows_app.command("resume")
def flows_resume(key: str) -> None:
    """paused -> active: runs continue where they were."""
    _lifecycle("resume", key)


@flows_app.command("archive")
def flows_archive(key: str) -> None:
    """Archive a flow for good: runs in progress exit ("flow archived")."""
    flow = _lifecycle("archive", key)
    console.print(f"{flow.get('exited_runs', 0)} runs in progress exited.", highlight=False)


@flows_app.command("enrol")
def flows_enrol(
    key: str,
    contact_ids: Annotated[list[int], typer.Argument(help="Contact ids.")],
    properties: Annotated[
        str, typer.Option(help="A JSON object the runs get as their trigger's properties.")
    ] = "{}",
) -> None:
    """Start runs of an active flow for the given contacts (entry rules apply)."""
    from tidings.flows import enrolment

    with _one_line_errors():
        given = _json_object(properties, "--properties")
        with _database() as engine, engine.begin() as conn:
            result = enrolment.enrol_api(conn, SystemClock(), key, contact_ids, given)
    console.print(
        f"Enrolled {len(result['enrolled'])}, skipped {len(result['skipped'])}.", highlight=False
    )
    for skipped in result["skipped"]:
        console.print(
            f"  contact {skipped['contact_id']}: {skipped['reason']}", highlight=False, markup=False
        )


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.InvalidInput.field(where, f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise errors.InvalidInput.field(where, "must be a JSON object")
    return value


@flows_app.command("move-runs")
def flows_move_runs(
    key: str,
    from_version: Annotated[int | None, typer.Option(help="Only runs on this version.")] = None,
    to_version: Annotated[int | None, typer.Option(help="Default: the newest.")] = None,
) -> None:
    """Move runs in progress to the newest version (or --to-version). A run moves only if
    the step it is at exists there; the others stay and are listed."""
    from tidings.flows import lifecycle

    with _one_line_errors(), _database() as engine, engine.begin() as conn:
        result = lifecycle.move_runs(
            conn, SystemClock(), key, from_version=from_version, to_version=to_version
        )
    console.print(f"Moved {result['moved']} runs to version {result['to_version']}.")
    for kept in result["kept"]:
        console.print(
            f"  kept {kept['runs']} on version {kept['version']} at step {kept['step_id']} "
            "(not in the target version)",
            highlight=False,
            markup=False,
        )


@flows_app.command("stats")
def flows_stats(key: str) -> None:
    """Per step: entered, waiting now, completed, exited, failed, converted, revenue."""
    from tidings.flows import stats

    with _one_line_errors(), _database() as engine, engine.connect() as conn:
        figures = stats.flow_stats(conn, key)
    columns = ("entered", "waiting", "completed", "exited", "failed", "converted")
    table = Table(title=f"{key} (version {figures['version']})")
    table.add_column("step", no_wrap=True)
    table.add_column("type", no_wrap=True)
    for column in (*columns, "revenue"):
        table.add_column(column, justify="right")
    for step in figures["steps"]:
        name = step["step_id"] + ("" if step["in_current_version"] else " (removed)")
        table.add_row(
            name, step["type"] or "", *(str(step[c]) for c in columns), f"{step['revenue']:.2f}"
        )
    console.print(table)
    runs = figures["runs"]
    console.print(
        f"Runs: {runs['entered']} entered, {runs['live']} in progress, {runs['completed']} "
        f"completed, {runs['exited']} exited, {runs['failed']} failed, {runs['converted']} "
        f"converted, revenue {runs['revenue']:.2f}. First activity: "
        f"{runs['first_activity_at'] or 'none'}, last: {runs['last_activity_at'] or 'none'}.",
        highlight=False,
    )
