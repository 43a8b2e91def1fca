"""Reading segments without changing them: a preview of an unsaved rule (count and a
sample), the stored members page by page, and why one contact is in or out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from tidings import errors
from tidings.clock import Clock
from tidings.conditions import evaluate, snapshot
from tidings.contacts import pagination
from tidings.db import tables
from tidings.segments import definitions, membership

MAX_SAMPLE = 100
_c, _m = tables.contacts, tables.segment_memberships


def preview(conn: Connection, clock: Clock, rule: Any, sample: int = 10) -> dict[str, Any]:
    """How many contacts `rule` holds for now, and the first `sample` of them (by id);
    nothing is stored. The rule is checked as a saved one would be."""
    if not 0 <= sample <= MAX_SAMPLE:
        raise errors.InvalidInput.field("sample", f"must be between 0 and {MAX_SAMPLE}")
    condition = definitions.parse_rule(rule)
    definitions.check_references(conn, condition)
    holds = membership.compile_rule(conn, rule, clock.now())
    count = conn.execute(select(func.count()).select_from(_c).where(holds)).scalar_one()
    rows = conn.execute(
        select(_c.c.id, _c.c.email, _c.c.external_id).where(holds).order_by(_c.c.id).limit(sample)
    ).all()
    return {
        "count": count,
        "sample": [{"id": r.id, "email": r.email, "external_id": r.external_id} for r in rows],
    }


def members(conn: Connection, key: str, *, cursor: str | None, limit: int) -> dict[str, Any]:
    """A page of the stored members of segment `key`, by contact id."""
    segment = definitions.find(conn, key)
    limit = pagination.check_limit(limit)
    query = (
        select(_m.c.contact_id, _c.c.email, _c.c.external_id, _m.c.entered_at)
        .join(_c, _c.c.id == _m.c.contact_id)
        .where(_m.c.segment_id == segment.id)
        .order_by(_m.c.contact_id)
        .limit(limit + 1)
    )
    if cursor is not None:
        (after,) = pagination.decode("segment_members", cursor, [int])
        query = query.where(_m.c.contact_id > after)
    rows, next_cursor = pagination.page(
        conn.execute(query).all(),
        limit,
        lambda r: pagination.encode("segment_members", r.contact_id),
    )
    return {"data": [dict(r._mapping) for r in rows], "next_cursor": next_cursor}


def explain(conn: Connection, clock: Clock, key: str, contact_id: int) -> dict[str, Any]:
    """For one contact: whether segment `key`'s rule holds now, which parts held and the
    values seen, beside whether the contact is a stored member (they differ until the
    worker has caught up)."""
    segment = definitions.find(conn, key)
    condition = definitions.parse_rule(segment.rule)
    now = clock.now()
    facts = snapshot.load(conn, contact_id, condition, now)

    def stored(ref: str, contact: int) -> bool:
        return membership.is_member(conn, ref, contact)

    why = evaluate.explain(condition, facts, now=now, segments=stored)
    return {
        "segment": key,
        "contact_id": contact_id,
        "holds": why.holds,
        "member": stored(key, contact_id),
        "explanation": why.as_dict(),
    }
