"""The journey history: what happened to a run, step by step, and why (`flow_run_steps`).

Each record names the step, an `action` and a `detail` (the branch taken and the condition's
values, the ledger row written, the time waited until...). The first record of each visit
to a step has `first` set; "entered the step" counts those. `GET /v1/contacts/{id}/journeys`
and `/v1/flows/{key}/stats` read this table."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: The run started (no step): detail holds the trigger.
ENTERED = "entered"
#: A send step wrote its ledger row (detail: message id, channel, template).
SENT = "sent"
#: A send was held back by the send window or a frequency cap (detail: until, why).
DEFERRED = "deferred"
#: A wait or wait_until began (detail: until).
WAITING = "waiting"
#: A wait ended on time; a wait_until saw its event (WOKE) or timed out (TIMED_OUT).
WAITED = "waited"
WOKE = "woke"
TIMED_OUT = "timed_out"
#: An if chose a branch (detail: branch, explanation); a split chose an arm.
BRANCHED = "branched"
SPLIT = "split"
#: update_contact and score steps.
UPDATED = "updated"
SCORED = "scored"
#: A goto jumped (detail: target).
JUMPED = "jumped"
#: The run ended: an exit step or exit_when (EXITED), the end of its steps (COMPLETED), a
#: step that failed (FAILED, detail: reason).
EXITED = "exited"
COMPLETED = "completed"
FAILED = "failed"
#: The goal was reached (detail: event, revenue).
CONVERTED = "converted"
#: An operator moved the run to another version of its flow.
MOVED = "moved"


@dataclass(frozen=True)
class Record:
    """One line of a run's history, as the engine returns it."""

    step_id: str | None
    action: str
    at: datetime
    first: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
