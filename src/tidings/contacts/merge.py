"""Merging contacts: one contact folded into another, which keeps everything of both.

`merge_contacts` merges two stored contacts now. The worker merges many per batch
(`tidings.contacts.identity`): it folds profiles in memory and then calls `move` once for
all of them, a handful of set-based statements however many merges the batch holds. The
rules are in docs/identity.md ("What a merge does").
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, TextClause, delete, insert, select, text, update

from tidings.clock import Clock
from tidings.contacts import fields
from tidings.db import tables

log = logging.getLogger(__name__)

contacts = tables.contacts
#: What a merge combines of the two profiles (besides `id`).
PROFILE_COLUMNS = (*fields.PROFILE_FIELDS, "attributes", "score", "traits_at", "created_at")


def mergeable(source_external_id: str | None, target_external_id: str | None) -> bool:
    """Two known users (different external ids) are never merged."""
    return source_external_id is None or source_external_id == target_external_id


def folded(target: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """The target's `PROFILE_COLUMNS` once `source` is folded in: the target's values win,
    its empty fields are filled from the source, attributes merge key by key, scores add
    up; the earlier `created_at` and the later `traits_at` are kept."""
    out = {
        n: target.get(n) if target.get(n) is not None else source.get(n)
        for n in fields.PROFILE_FIELDS
    }
    out["attributes"] = {**(source.get("attributes") or {}), **(target.get("attributes") or {})}
    out["score"] = int(target.get("score") or 0) + int(source.get("score") or 0)
    stamps = [t for t in (target.get("traits_at"), source.get("traits_at")) if t is not None]
    out["traits_at"] = max(stamps) if stamps else None
    created = [t for t in (target.get("created_at"), source.get("created_at")) if t is not None]
    out["created_at"] = min(created) if created else None
    return out


def combined_status(ours: str, theirs: str) -> str:
    """A list status after a merge: an unsubscribe on either side stands (it is never
    overridden by the other contact's subscription); otherwise subscribed beats pending."""
    for status in ("unsubscribed", "subscribed"):
        if status in (ours, theirs):
            return status
    return "pending"


def merge_contacts(conn: Connection, clock: Clock, source_id: int, target_id: int) -> bool:
    """Merge contact `source_id` into `target_id` and delete it: its events, anonymous ids,
    tags, list memberships and consents move over, its profile fills the target's gaps.
    Refused (False, nothing changes) when both have different external ids."""
    query = select(contacts.c.id, *(contacts.c[n] for n in PROFILE_COLUMNS)).where(
        contacts.c.id.in_([source_id, target_id])
    )
    if conn.dialect.name == "postgresql":
        query = query.order_by(contacts.c.id).with_for_update()
    found = {int(row.id): dict(row._mapping) for row in conn.execute(query)}
    source, target = found.get(source_id), found.get(target_id)
    if source is None or target is None or source_id == target_id:
        return False
    if not mergeable(source["external_id"], target["external_id"]):
        return False
    move(conn, clock, [(source_id, target_id)])  # deletes the source: frees its email
    values = folded(target, source) | {"updated_at": clock.now()}
    conn.execute(update(contacts).where(contacts.c.id == target_id).values(values))
    return True


def move(conn: Connection, clock: Clock, merges: Sequence[tuple[int, int]]) -> None:
    """Move what belongs to each merged contact (events, anonymous ids, consents, tags, list
    memberships) to the one it was merged into, then delete the merged ones. `merges` are
    (source id, target id) in the order they happened; a target may be merged later on."""
    if not merges:
        return
    final = dict(merges)
    for source in final:  # follow chains: a -> b, then b -> c moves a's history to c
        target = final[source]
        while target in final:
            target = final[target]
        final[source] = target
    pairs = _pairs(conn, final)
    for statement in _moves(conn.dialect.name):
        conn.execute(statement, pairs)
    _merge_memberships(conn, clock, merges)
    _move_runs(conn, clock, final)
    conn.execute(delete(contacts).where(contacts.c.id.in_(list(final))))
    for source, target in final.items():
        log.info("merged contacts", extra={"contact_id": target, "merged_contact_id": source})


#: The (source, target) pairs of `move` as the relation `m`, from `_pairs`'s parameters.
_PAIRS = {
    "postgresql": "unnest(CAST(:sources AS bigint[]), CAST(:targets AS bigint[]))"
    " AS m(source, target)",
    "sqlite": "(SELECT CAST(key AS INTEGER) AS source, value AS target"
    " FROM json_each(:pairs)) AS m",
}
#: Statements moving what belongs to each source over to its target (named SQL: the same
#: text on both engines, `UPDATE ... FROM` included).
_MOVES = [
    *(
        f"UPDATE {table} SET contact_id = m.target FROM {{pairs}}"  # noqa: S608 - our names
        f" WHERE {table}.contact_id = m.source"
        for table in ("events", "contact_anonymous_ids", "consents", "messages")
    ),
    "INSERT INTO contact_tags (contact_id, tag)"  # tags: the union
    " SELECT DISTINCT m.target, t.tag FROM contact_tags t JOIN {pairs} ON t.contact_id = m.source"
    " WHERE NOT EXISTS (SELECT 1 FROM contact_tags mine"
    " WHERE mine.contact_id = m.target AND mine.tag = t.tag)",
]


@functools.cache
def _moves(dialect: str) -> list[TextClause]:
    pairs = _PAIRS["postgresql" if dialect == "postgresql" else "sqlite"]
    return [text(sql.format(pairs=pairs)) for sql in _MOVES]


def _pairs(conn: Connection, final: Mapping[int, int]) -> dict[str, str]:
    """The bind parameters of `{pairs}`: two integer arrays, or one JSON object."""
    if conn.dialect.name == "postgresql":
        return {
            "sources": "{" + ",".join(map(str, final)) + "}",
            "targets": "{" + ",".join(map(str, final.values())) + "}",
        }
    return {"pairs": "{" + ",".join(f'"{s}":{t}' for s, t in final.items()) + "}"}


def _merge_memberships(conn: Connection, clock: Clock, merges: Sequence[tuple[int, int]]) -> None:
    """Lists only the source was on move to the target; for a list both are on, the
    statuses combine (`combined_status`) and the earlier `created_at` is kept. Worked out
    in order, merge by merge, then written back in two statements."""
    m = tables.list_memberships
    involved = sorted({i for pair in merges for i in pair})
    rows = conn.execute(select(m).where(m.c.contact_id.in_(involved))).all()
    if not rows:
        return
    state: dict[tuple[int, int], dict[str, Any]] = {
        (r.contact_id, r.list_id): dict(r._mapping) for r in rows
    }
    now = clock.now()
    for source, target in merges:
        for contact_id, list_id in [key for key in state if key[0] == source]:
            theirs = state.pop((contact_id, list_id))
            mine = state.get((target, list_id))
            state[(target, list_id)] = (
                theirs | {"contact_id": target} if mine is None else _combined(mine, theirs, now)
            )
    conn.execute(delete(m).where(m.c.contact_id.in_(involved)))
    conn.execute(insert(m), list(state.values()))


def _move_runs(conn: Connection, clock: Clock, final: Mapping[int, int]) -> None:
    """Flow runs move to the target, numbered after its own runs of the same flow and key;
    a live run that would be a second live run of the target in that flow ends (exited,
    "merged"): the target's own run carries on."""
    r = tables.flow_runs
    involved = sorted({*final, *final.values()})
    rows = conn.execute(
        select(r.c.id, r.c.flow_id, r.c.contact_id, r.c.entry_key, r.c.entry_seq, r.c.ended_at)
        .where(r.c.contact_id.in_(involved))
        .order_by(r.c.id)
    ).all()
    taken: dict[tuple[int, int, str], set[int]] = defaultdict(set)
    live: set[tuple[int, int, str]] = set()
    for row in rows:
        if row.contact_id not in final:
            taken[(row.flow_id, row.contact_id, row.entry_key)].add(row.entry_seq)
            if row.ended_at is None:
                live.add((row.flow_id, row.contact_id, row.entry_key))
    now, moves = clock.now(), []
    for row in (row for row in rows if row.contact_id in final):
        key = (row.flow_id, final[row.contact_id], row.entry_key)
        seq = max(taken[key], default=-1) + 1
        taken[key].add(seq)
        ends = row.ended_at is None and key in live
        if row.ended_at is None and not ends:
            live.add(key)
        moves.append({"rid": row.id, "target": key[1], "seq": seq, "ends": ends})
    for move in moves:
        values: dict[str, Any] = {"contact_id": move["target"], "entry_seq": move["seq"]}
        if move["ends"]:
            values |= {"status": "exited", "ended_at": now, "end_reason": "merged", "step_id": None}
            values |= {"next_at": None, "wait_event": None}
        conn.execute(update(r).where(r.c.id == move["rid"]).values(**values))


def _combined(mine: dict[str, Any], theirs: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    status = combined_status(mine["status"], theirs["status"])
    if status == mine["status"] and theirs["created_at"] >= mine["created_at"]:
        return mine
    return mine | {
        "status": status,
        "created_at": min(mine["created_at"], theirs["created_at"]),
        "updated_at": now if status != mine["status"] else mine["updated_at"],
    }
