"""A contact's journeys: every run of every flow, newest first, each with its history step
by step — when, which action and why (`detail`: the branch and the condition's values, the
message written, the time waited until...). Enough to answer "why did this contact get
this message?" (`GET /v1/contacts/{id}/journeys`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, select

from tidings.contacts import profiles
from tidings.db import tables

#: Runs shown by default; a contact of an `always` flow may have many.
DEFAULT_LIMIT = 100

_r = tables.flow_runs
_f = tables.flows
_h = tables.flow_run_steps


def for_contact(
    conn: Connection, contact_id: int, *, limit: int = DEFAULT_LIMIT
) -> list[dict[str, Any]]:
    """The contact's `limit` newest runs with their history in order; `NotFound` for an
    unknown contact."""
    profiles.get_row(conn, contact_id)
    runs = conn.execute(
        select(_r, _f.c.key.label("flow_key"), _f.c.name.label("flow_name"))
        .join(_f, _f.c.id == _r.c.flow_id)
        .where(_r.c.contact_id == contact_id)
        .order_by(_r.c.entered_at.desc(), _r.c.id.desc())
        .limit(limit)
    ).all()
    steps = _history(conn, [run.id for run in runs])
    return [
        {
            "run_id": run.id,
            "flow_key": run.flow_key,
            "flow_name": run.flow_name,
            "version": run.version,
            "status": run.status,
            "step_id": run.step_id,
            "next_at": run.next_at,
            "entry_key": run.entry_key,
            "entered_at": run.entered_at,
            "ended_at": run.ended_at,
            "end_reason": run.end_reason,
            "converted_at": run.converted_at,
            "converted_step": run.converted_step,
            "revenue": run.revenue,
            "steps": steps.get(run.id, []),
        }
        for run in runs
    ]


def _history(conn: Connection, run_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The history records of `run_ids`, by run, in the order they were written."""
    query = (
        select(_h.c.run_id, _h.c.step_id, _h.c.action, _h.c.at, _h.c.detail)
        .where(_h.c.run_id.in_(run_ids))
        .order_by(_h.c.run_id, _h.c.id)
    )
    by_run: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for record in conn.execute(query):
        by_run[record.run_id].append(
            {
                "step_id": record.step_id,
                "action": record.action,
                "at": record.at,
                "detail": record.detail,
            }
        )
    return by_run
