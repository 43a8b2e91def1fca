"""Profile changes decided by flow steps (`update_contact`, `score`), applied in the
transaction that saves the run. A change that cannot be made (a list that no longer
exists, an invalid value) fails that run with the reason and touches nothing else."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, update

from tidings import errors
from tidings.clock import Clock
from tidings.contacts import consent, fields, lists, profiles
from tidings.db import tables
from tidings.flows import engine, graph, history

log = logging.getLogger(__name__)


def apply_profile_changes(
    conn: Connection, clock: Clock, outcomes: Sequence[tuple[str, engine.Outcome]]
) -> None:
    """Apply every `update_contact` and `score` effect of `outcomes` (flow key, outcome)."""
    scores: list[dict[str, Any]] = []
    for key, outcome in outcomes:
        for effect in outcome.effects:
            if isinstance(effect, engine.ScoreChange):
                scores.append({"cid": outcome.run.contact_id, "delta": effect.delta})
            elif isinstance(effect, engine.ContactUpdate):
                if not _update(conn, clock, key, outcome, effect):
                    break
    if scores:
        c = tables.contacts
        conn.execute(
            update(c)
            .where(c.c.id == bindparam("cid"))
            .values(score=c.c.score + bindparam("delta"), updated_at=clock.now()),
            scores,
        )


def _update(
    conn: Connection, clock: Clock, key: str, outcome: engine.Outcome, effect: engine.ContactUpdate
) -> bool:
    """Apply one update in a savepoint; False (and the run failed) when it cannot be."""
    proof = consent.Proof(source=f"flow:{key}")
    try:
        with conn.begin_nested():
            apply_update(conn, clock, outcome.run.contact_id, effect.change, proof)
    except errors.TidingsError as exc:
        _fail(outcome, effect.step_id, exc.message, clock)
        return False
    return True


def apply_update(
    conn: Connection, clock: Clock, contact_id: int, change: graph.UpdateContact, proof: Any
) -> None:
    """One `update_contact` step's changes to one contact."""
    patch: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for name, value in change.set.items():
        (patch if name in fields.PROFILE_FIELDS else attributes)[name] = value
    for name in change.unset:
        (patch if name in fields.PROFILE_FIELDS else attributes)[name] = None
    if attributes:
        patch["attributes"] = attributes
    if change.add_tags:
        patch["add_tags"] = list(change.add_tags)
    if change.remove_tags:
        patch["remove_tags"] = list(change.remove_tags)
    if change.add_to_lists:
        for list_key in change.add_to_lists:
            lists.find(conn, list_key)  # NotFound names the list
        patch["lists"] = [{"key": k, "status": "subscribed"} for k in change.add_to_lists]
    profiles.update_contact(conn, clock, contact_id, patch, proof)
    for list_key in change.remove_from_lists:
        try:
            lists.remove(conn, clock, list_key, contact_id, proof)
        except errors.NotFound:
            continue  # not on that list: nothing to remove


def _fail(outcome: engine.Outcome, step_id: str, reason: str, clock: Clock) -> None:
    run = outcome.run
    log.warning("flow step failed", extra={"run_id": run.id, "step": step_id, "reason": reason})
    run.status, run.end_reason = "failed", f"step {step_id}: {reason}"
    run.step_id = run.next_at = run.wait_event = None
    # what the run decided after the failed step does not happen
    steps = [getattr(e, "step_id", None) for e in outcome.effects]
    outcome.effects = outcome.effects[: steps.index(step_id) + 1]
    outcome.records.append(
        history.Record(step_id, history.FAILED, clock.now(), False, {"reason": reason})
    )
