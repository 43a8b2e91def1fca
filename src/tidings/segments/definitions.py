"""Creating, changing and deleting segments. A rule is checked in full before anything is
stored: the condition itself (`conditions.model.parse`, errors at `rule.all[2]...`), then
its `{segment: KEY}` references (unknown ones and cycles are refused at their path). A new
or changed rule is built at once, so a segment is never served half-computed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tidings import errors
from tidings.clock import Clock
from tidings.conditions import model
from tidings.conditions.nodes import Condition
from tidings.db import tables
from tidings.segments import dependencies, membership

_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_EDITABLE = ("name", "description", "rule")
_s = tables.segments


def check_key(key: Any, where: str = "key") -> str:
    """A segment key: a lower-case slug (`a-z`, `0-9`, `-`, `_`), at most 100 characters."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise errors.InvalidInput.field(
            where, "must be a lower-case slug: a-z, 0-9, '-' and '_', at most 100 characters"
        )
    return key


def parse_rule(rule: Any) -> Condition:
    """The stored or given rule as a condition; problems are named `rule...`."""
    return model.parse(rule, "rule")


def check_references(conn: Connection, condition: Condition, key: str | None = None) -> None:
    """Refuse references to unknown segments, and (for segment `key`) cycles."""
    refs = dependencies.references(condition)
    if refs:
        dependencies.check(key or "", refs, dependencies.load(conn))


def _checked(changes: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _EDITABLE:
        if name not in changes:
            continue
        value = changes[name]
        if name == "name" and (not isinstance(value, str) or not 0 < len(value.strip()) <= 255):
            raise errors.InvalidInput.field(name, "must be 1 to 255 characters")
        if name == "description" and (not isinstance(value, str) or len(value) > 10_000):
            raise errors.InvalidInput.field(name, "must be a text of at most 10000 characters")
        if name == "rule":
            parse_rule(value)
        out[name] = value.strip() if name == "name" else value
    return out


def create(conn: Connection, clock: Clock, values: Mapping[str, Any]) -> dict[str, Any]:
    """A new segment from `{key, name, rule, description?}`, built at once; 409 if the key
    is taken."""
    key = check_key(values.get("key"))
    row = {"description": "", **_checked(values)}
    for required in ("name", "rule"):
        if required not in row:
            raise errors.InvalidInput.field(required, "is required")
    check_references(conn, parse_rule(row["rule"]), key)
    if conn.execute(select(_s.c.id).where(_s.c.key == key)).first():
        raise _key_taken(key)
    now = clock.now()
    try:
        conn.execute(insert(_s).values(key=key, created_at=now, updated_at=now, **row))
    except IntegrityError:
        raise _key_taken(key) from None
    membership.rebuild(conn, clock, key)
    return get(conn, key)


def _key_taken(key: str) -> errors.Conflict:
    return errors.Conflict(
        f"key: a segment with key {key!r} exists",
        fields=[errors.FieldError("key", "a segment with this key exists")],
    )


def find(conn: Connection, key: str) -> Row[Any]:
    """The segment row for `key`; `NotFound` if there is none."""
    row = conn.execute(select(_s).where(_s.c.key == key)).first()
    if row is None:
        raise errors.NotFound(f"No segment with key {key!r}.")
    return row


def get(conn: Connection, key: str) -> dict[str, Any]:
    """One segment with its member count."""
    row = find(conn, key)
    return _render(row, _counts(conn, [row.id]).get(row.id, 0))


def list_all(conn: Connection) -> list[dict[str, Any]]:
    """Every segment, by key, with member counts."""
    rows = conn.execute(select(_s).order_by(_s.c.key)).all()
    counts = _counts(conn, [r.id for r in rows])
    return [_render(r, counts.get(r.id, 0)) for r in rows]


def update_segment(
    conn: Connection, clock: Clock, key: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change a segment's name, description or rule; a new rule is checked and rebuilt."""
    row = find(conn, key)
    values = _checked(changes)
    if "rule" in values:
        check_references(conn, parse_rule(values["rule"]), key)
    if values:
        conn.execute(update(_s).where(_s.c.id == row.id).values(updated_at=clock.now(), **values))
    if "rule" in values and values["rule"] != row.rule:
        membership.rebuild(conn, clock, key)
    return get(conn, key)


def delete_segment(conn: Connection, key: str) -> None:
    """Delete a segment and its memberships (no Segment Left events: the segment is gone).
    Refused while another segment's rule refers to it."""
    row = find(conn, key)
    users = dependencies.dependents(key, dependencies.load(conn))
    if users:
        raise errors.Conflict(
            f"Segment {key!r} is used by the rules of: {', '.join(users)}; change those first."
        )
    conn.execute(delete(_s).where(_s.c.id == row.id))


def _counts(conn: Connection, segment_ids: list[int]) -> dict[int, int]:
    m = tables.segment_memberships
    rows = conn.execute(
        select(m.c.segment_id, func.count().label("n"))
        .where(m.c.segment_id.in_(segment_ids))
        .group_by(m.c.segment_id)
    )
    return {r.segment_id: r.n for r in rows}


def _render(row: Row[Any], count: int) -> dict[str, Any]:
    return {
        "key": row.key,
        "name": row.name,
        "description": row.description,
        "rule": row.rule,
        "member_count": count,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "rebuilt_at": row.rebuilt_at,
    }
