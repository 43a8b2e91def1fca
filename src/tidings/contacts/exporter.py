"""CSV export of contacts, streamed from a server-side cursor in one read snapshot.

Columns: the profile fields, `tags` (comma-separated), then one `attributes.NAME` column per
attribute key in use. Attribute strings are written as they are; other values (numbers,
booleans, objects) and strings that would read back as one of those are written as JSON,
so `import` gets the same values back. Cells that a spreadsheet would run as a formula
(starting with `=`, `+`, `-`, `@`, tab or CR) get a leading `'` (OWASP CSV injection);
the importer removes it again.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from typing import Any, TextIO

from sqlalchemy import Connection, Engine, Select, exists, func, select, text

from tidings.contacts import bulk, fields
from tidings.db import tables

COLUMNS = (*fields.PROFILE_FIELDS, "tags")
_FORMULA_START = frozenset("=+-@\t\r")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-][0-9]+(?:\.[0-9]+)?\Z")  # `+4930123456`, `-1.5`: no formula
STREAM_ROWS = 2000


def neutralise(cell: str) -> str:
    """`=1+2` -> `'=1+2`; also a cell already starting with quotes and a formula character,
    so that `unescape` gives back exactly the original. Plain signed numbers (E.164 phone
    numbers) stay as they are: they cannot call anything."""
    if cell and cell[0] in _FORMULA_START and not _NUMBER.match(cell):
        return "'" + cell
    return "'" + cell if cell.startswith("'") and _ESCAPED.match(cell) else cell


def unescape(cell: str) -> str:
    """The inverse of `neutralise`."""
    return cell[1:] if cell.startswith("'") and _ESCAPED.match(cell) else cell


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_json(cell: str) -> tuple[bool, Any]:
    try:
        value = json.loads(cell, parse_constant=_reject_constant)
    except ValueError:
        return False, None
    if isinstance(value, float) and not math.isfinite(value):
        return False, None
    return True, value


def typed(cell: str) -> Any:
    """An `attributes.NAME` cell as its value: JSON when it parses as JSON, else the text."""
    ok, value = _parse_json(cell)
    return value if ok else cell


def format_attribute(value: Any) -> str:
    """The cell for an attribute value; `typed` reads it back as the same value."""
    if isinstance(value, str):
        ambiguous = not value.strip() or value[0] in '"{[' or _parse_json(value)[0]
        return json.dumps(value, ensure_ascii=False) if ambiguous else value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def export_csv(engine: Engine, out: TextIO, *, list_key: str | None = None) -> int:
    """Write every contact (or those subscribed to `list_key`) to `out`; returns how many."""
    with engine.connect().execution_options(readonly=True) as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            list_id = bulk.find_list(conn, list_key) if list_key else None
            keys = attribute_keys(conn, list_id)
            writer = csv.writer(out)
            writer.writerow([*COLUMNS, *(f"attributes.{k}" for k in keys)])
            count = 0
            for cells in _rows(conn, list_id, keys):
                writer.writerow(cells)
                count += 1
    return count


def _rows(conn: Connection, list_id: int | None, keys: list[str]) -> Iterator[list[str]]:
    query = _contacts_query(conn, list_id)
    for row in conn.execution_options(yield_per=STREAM_ROWS).execute(query):
        cells = [getattr(row, name) or "" for name in fields.PROFILE_FIELDS]
        cells.append(",".join(sorted(row.tags.split(","))) if row.tags else "")
        attributes = row.attributes if isinstance(row.attributes, dict) else {}
        cells += [format_attribute(attributes[k]) if k in attributes else "" for k in keys]
        yield [neutralise(cell) for cell in cells]


def _subscribed(list_id: int) -> Any:
    m = tables.list_memberships
    c = tables.contacts.c
    return exists().where(
        m.c.list_id == list_id, m.c.contact_id == c.id, m.c.status == "subscribed"
    )


def _contacts_query(conn: Connection, list_id: int | None) -> Select[Any]:
    """Contacts by id with their tags aggregated into one comma-separated string."""
    c, t = tables.contacts.c, tables.contact_tags.c
    joined = (
        func.string_agg(t.tag, ",")
        if conn.dialect.name == "postgresql"
        else func.group_concat(t.tag, ",")
    )
    tags = select(joined).where(t.contact_id == c.id).scalar_subquery()
    profile = [c[name] for name in fields.PROFILE_FIELDS]
    query = select(c.id, *profile, c.attributes, tags.label("tags")).order_by(c.id)
    return query.where(_subscribed(list_id)) if list_id is not None else query


# Every attribute key in use (by the exported contacts), for the header.
_KEYS_SQL = {
    "postgresql": "SELECT DISTINCT k FROM contacts, jsonb_object_keys(attributes) AS k "
    "WHERE jsonb_typeof(attributes) = 'object'",
    "sqlite": "SELECT DISTINCT j.key FROM contacts, json_each(contacts.attributes) AS j "
    "WHERE json_type(contacts.attributes) = 'object'",
}
_IN_LIST_SQL = (
    " AND EXISTS (SELECT 1 FROM list_memberships m WHERE m.list_id = :list_id"
    " AND m.contact_id = contacts.id AND m.status = 'subscribed')"
)


def attribute_keys(conn: Connection, list_id: int | None = None) -> list[str]:
    """Sorted attribute keys used by any contact (of the list's subscribers)."""
    sql = _KEYS_SQL[conn.dialect.name] + (_IN_LIST_SQL if list_id is not None else "")
    params = {"list_id": list_id} if list_id is not None else {}
    return sorted(str(k) for k in conn.execute(text(sql), params).scalars())
