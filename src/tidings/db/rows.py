"""Writing a batch of rows (the flow worker's runs, history and ledger rows) without paying
SQLAlchemy's per-row parameter handling, which cost more than the database's own work; and
reading rows by a batch's ids (`among`) with one parameter instead of thousands.

PostgreSQL: the whole batch is ONE bound JSON document of positional arrays, expanded by
`jsonb_array_elements` inside one `INSERT ... SELECT` or `UPDATE ... FROM` (psycopg
converts one value, the server plans one statement). SQLite: one prepared statement run by
the driver's `executemany` over plain tuples, each value converted by the column type's
own bind processor (so stored values are exactly what SQLAlchemy would store)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    Connection,
    DateTime,
    Executable,
    Float,
    Integer,
    Table,
    Text,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

from tidings.db import tables
from tidings.db.types import UTCDateTime

Names = tuple[str, ...]


def insert_many(
    conn: Connection,
    table: Table,
    names: Names,
    rows: Sequence[Sequence[Any]],
    *,
    skip_conflicts: bool = False,
) -> None:
    """INSERT `rows` (values in the order of `names`); with `skip_conflicts`, a row a unique
    index refuses is left out (ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(_pg_insert(table.name, names, skip_conflicts), {"rows": _document(rows)})
        return
    quoted = [conn.dialect.identifier_preparer.quote(n) for n in names]
    sql = (
        f"INSERT INTO {table.name} ({', '.join(quoted)}) "  # noqa: S608 - our table's columns
        f"VALUES ({', '.join('?' * len(names))})"
        f"{' ON CONFLICT DO NOTHING' if skip_conflicts else ''}"
    )
    conn.exec_driver_sql(sql, _driver_rows(conn, table, names, rows))


def update_many(
    conn: Connection,
    table: Table,
    key: str,
    names: Names,
    rows: Sequence[Sequence[Any]],
    constants: Mapping[str, Any],
) -> None:
    """UPDATE the rows whose column `key` holds each row's first value, setting `names`
    (the rest of the row) and `constants` (the same for every row: `updated_at`...)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        statement = _pg_update(table.name, key, names, tuple(constants))
        conn.execute(statement, {"rows": _document(rows), **constants})
        return
    preparer = conn.dialect.identifier_preparer
    assigned = [*names, *constants]
    sql = (
        f"UPDATE {table.name} SET {', '.join(f'{preparer.quote(n)} = ?' for n in assigned)} "  # noqa: S608
        f"WHERE {preparer.quote(key)} = ?"
    )
    fixed = _driver_rows(conn, table, tuple(constants), [tuple(constants.values())])[0]
    moved = [(*row[1:], *fixed, row[0]) for row in _driver_rows(conn, table, (key, *names), rows)]
    conn.exec_driver_sql(sql, moved)


def among(
    conn: Connection, column: ColumnElement[Any], ids: Collection[int]
) -> ColumnElement[bool]:
    """`column IN (ids)` with the ids as ONE bound parameter (a PostgreSQL array literal,
    a JSON array on SQLite): for 2,000 ids, a third of the time of an expanded `IN` list
    (binding and rendering 2,000 parameters) on both engines."""
    if conn.dialect.name == "postgresql":
        literal = "{" + ",".join(str(int(i)) for i in ids) + "}"
        array = cast(bindparam(None, literal, type_=Text()), postgresql.ARRAY(BigInteger()))
        # a semi-join, not `= ANY(array)`: when the planner picks a sequential scan (a small
        # table, no statistics yet), ANY compares every row with every id
        return column.in_(select(func.unnest(array)))
    each = func.json_each(bindparam(None, orjson.dumps(list(ids)).decode(), type_=Text()))
    return column.in_(select(each.table_valued("value").c.value))


def among_text(
    conn: Connection, column: ColumnElement[Any], values: Collection[str]
) -> ColumnElement[bool]:
    """`column IN (values)` for strings, as ONE bound parameter (like `among`)."""
    document = orjson.dumps(list(values)).decode()
    if conn.dialect.name == "postgresql":
        elements = func.jsonb_array_elements_text(cast(bindparam(None, document), postgresql.JSONB))
        return column.in_(select(elements.table_valued("value").c.value))
    each = func.json_each(bindparam(None, document, type_=Text()))
    return column.in_(select(each.table_valued("value").c.value))


# -- SQLite: values as the driver takes them --------------------------------------------


def _driver_rows(
    conn: Connection, table: Table, names: Names, rows: Sequence[Sequence[Any]]
) -> list[tuple[Any, ...]]:
    """Each value through its column type's bind processor (if it has one); timestamps,
    which repeat a lot within a batch (`now`), converted once per distinct value."""
    dialect = conn.dialect
    processors: list[tuple[int, Callable[[Any], Any]]] = []
    for i, name in enumerate(names):
        kind = table.c[name].type
        found = kind.dialect_impl(dialect).bind_processor(dialect)
        if found is not None:
            is_time = isinstance(kind, UTCDateTime | DateTime)
            processors.append((i, _memo(found) if is_time else found))
    out = []
    for row in rows:
        values = list(row)
        for i, convert in processors:
            value = values[i]
            if value is not None:
                values[i] = convert(value)
        out.append(tuple(values))
    return out


def _memo(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    seen: dict[datetime, Any] = {}

    def convert(value: datetime) -> Any:
        found = seen.get(value)
        if found is None:
            found = seen[value] = process(value)
        return found

    return convert


# -- PostgreSQL: one JSON document -------------------------------------------------------


def _document(rows: Sequence[Sequence[Any]]) -> str:
    """The rows as one JSON array of arrays (timestamps as ISO 8601 with their offset)."""
    try:
        return orjson.dumps(rows, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits...: the standard library copes
        return json.dumps(rows, separators=(",", ":"), ensure_ascii=False, default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _elements() -> Any:
    doc = cast(bindparam("rows", type_=Text()), postgresql.JSONB())
    return func.jsonb_array_elements(doc).table_valued("value").render_derived(name="v")


def _element(value: Any, position: int, kind: TypeEngine[Any]) -> Any:
    """Position `position` of the array `value`, as a value of the column type `kind`."""
    index = literal_column(str(position), Integer())
    if isinstance(kind, JSON):
        return value.op("->", return_type=kind)(index)
    text = value.op("->>", return_type=Text())(index)
    if isinstance(kind, UTCDateTime | DateTime):
        return cast(text, DateTime(timezone=True))
    if isinstance(kind, BigInteger | Integer | Float | Boolean):
        return cast(text, kind)
    return text


@functools.cache
def _pg_insert(table_name: str, names: Names, skip_conflicts: bool) -> Executable:
    table = tables.metadata.tables[table_name]
    v = _elements()
    values = select(*(_element(v.c.value, i, table.c[n].type) for i, n in enumerate(names)))
    statement = postgresql.insert(table).from_select(list(names), values)
    return statement.on_conflict_do_nothing() if skip_conflicts else statement


@functools.cache
def _pg_update(table_name: str, key: str, names: Names, constants: Names) -> Executable:
    table = tables.metadata.tables[table_name]
    v = _elements()
    keyed = _element(v.c.value, 0, table.c[key].type)
    assigned = {n: _element(v.c.value, i, table.c[n].type) for i, n in enumerate(names, 1)}
    assigned |= {n: bindparam(n, type_=table.c[n].type) for n in constants}
    return update(table).where(table.c[key] == keyed).values(assigned)
