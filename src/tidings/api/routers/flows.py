"""`/v1/flows`: apply flow definitions, read them and their versions, move them through
their lifecycle, enrol contacts, move runs between versions and read their figures; and
`/v1/contacts/{id}/journeys`, every run of one contact step by step.

Reads need a `read` (or `admin`) key, writes an `admin` key; the definition's JSON Schema
(`/v1/flows/schema`) is public, so editors can fetch it. A definition is checked in full
before anything is stored: each problem comes back as a 422 naming its path
(`steps[3].then[0].send_email.template`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from tidings import errors
from tidings.api.deps import AdminKey, ClockDep, EngineDep, ReadKey
from tidings.clock import Clock
from tidings.flows import definition, enrolment, journeys, lifecycle, stats, store

router = APIRouter(prefix="/v1/flows", tags=["flows"])
contacts_router = APIRouter(prefix="/v1/contacts", tags=["contacts"])

MAX_ID = 2**63 - 1
MAX_VERSION = 2**31 - 1
MAX_ENROL = 10_000
Version = Annotated[int, Field(ge=1, le=MAX_VERSION)]
ContactId = Annotated[int, Field(ge=1, le=MAX_ID)]
FlowStatus = Literal["draft", "active", "paused", "archived"]
Definition = Annotated[
    dict[str, Any],
    Body(
        description="A flow definition (docs/flow-format.md); its JSON Schema is served at "
        "`GET /v1/flows/schema`.",
        examples=[
            {
                "key": "welcome",
                "name": "Welcome series",
                "trigger": {"event": "Signed Up"},
                "steps": [{"send_email": {"template": "welcome"}}],
            }
        ],
    ),
]
Activate = Annotated[bool, Query(description="Also make a draft or paused flow active.")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VersionOut(BaseModel):
    version: int
    created_at: datetime
    live_runs: int = Field(description="Runs in progress on this version.")


class FlowSummary(BaseModel):
    key: str
    name: str
    description: str
    status: FlowStatus
    version: int = Field(description="The newest version; new runs start on it.")
    trigger_type: str
    trigger_event: str | None = Field(description="The log event that can start a run.")
    live_runs: int = Field(description="Runs in progress (active or waiting), all versions.")
    created_at: datetime
    updated_at: datetime


class FlowOut(FlowSummary):
    shown_version: int = Field(description="The version whose definition is shown.")
    definition: dict[str, Any] = Field(description="As stored: every step with its id.")
    versions: list[VersionOut]


class AppliedOut(FlowOut):
    outcome: Literal["created", "updated", "unchanged"] = Field(
        description="`updated`: the definition changed and became a new version."
    )


class FlowsOut(BaseModel):
    data: list[FlowSummary]


class EnrolIn(_Strict):
    contact_id: ContactId | None = Field(None, description="One contact...")
    contact_ids: list[ContactId] | None = Field(
        None, min_length=1, max_length=MAX_ENROL, description=f"...or up to {MAX_ENROL:,}."
    )
    properties: dict[str, Any] = Field(
        default_factory=dict, description="Given to the run as its trigger's properties."
    )


class Enrolled(BaseModel):
    contact_id: int
    run_id: int


class Skipped(BaseModel):
    contact_id: int
    reason: str = Field(description="Why no run started (entry rule, filter...).")


class EnrolOut(BaseModel):
    enrolled: list[Enrolled]
    skipped: list[Skipped]


class MoveRunsIn(_Strict):
    from_version: Version | None = Field(None, description="Only runs on this version.")
    to_version: Version | None = Field(None, description="Default: the newest version.")


class KeptRuns(BaseModel):
    version: int
    step_id: str | None = Field(description="A step the target version does not have.")
    runs: int


class MoveRunsOut(BaseModel):
    key: str
    to_version: int
    moved: int
    kept: list[KeptRuns] = Field(description="Runs left where they are, by version and step.")


class StepStats(BaseModel):
    step_id: str
    type: str | None = Field(description="`send_email`, `wait`, `if`...; null if removed.")
    in_current_version: bool
    entered: int = Field(description="Visits to the step.")
    waiting: int = Field(description="Runs at the step now.")
    completed: int = Field(description="Visits that went on past the step.")
    exited: int
    failed: int
    converted: int = Field(description="Runs whose goal is credited to this step.")
    revenue: float


class RunTotals(BaseModel):
    entered: int
    live: int
    completed: int
    exited: int
    failed: int
    converted: int
    revenue: float
    first_activity_at: datetime | None
    last_activity_at: datetime | None


class StatsOut(BaseModel):
    key: str
    version: int
    runs: RunTotals
    steps: list[StepStats]


class HistoryOut(BaseModel):
    step_id: str | None
    action: str = Field(description="entered, sent, waiting, branched, exited... (docs/flows.md)")
    at: datetime
    detail: dict[str, Any] = Field(description="Why: the branch and condition values...")


class JourneyOut(BaseModel):
    run_id: int
    flow_key: str
    flow_name: str
    version: int
    status: Literal["active", "waiting", "completed", "exited", "failed"]
    step_id: str | None
    next_at: datetime | None
    entry_key: str
    entered_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    converted_at: datetime | None
    converted_step: str | None
    revenue: float | None
    steps: list[HistoryOut]


class JourneysOut(BaseModel):
    contact_id: int
    data: list[JourneyOut]


@router.get("/schema")
def flow_schema() -> dict[str, Any]:
    """The JSON Schema of a flow definition (no key needed)."""
    return definition.schema()


@router.get("")
def all_flows(api_key: ReadKey, engine: EngineDep, status: FlowStatus | None = None) -> FlowsOut:
    with engine.connect().execution_options(readonly=True) as conn:
        return FlowsOut.model_validate({"data": store.list_all(conn, status)})


@router.post("", status_code=201, responses={200: {"model": AppliedOut}})
def apply_flow(
    body: Definition,
    response: Response,
    api_key: AdminKey,
    engine: EngineDep,
    clock: ClockDep,
    activate: Activate = False,
) -> AppliedOut:
    """Create the flow, or update it (a new version) when its key exists; 201 only when
    created. Applying the same definition again changes nothing."""
    return _apply(body, response, engine, clock, activate)


@router.put("/{key}", status_code=201, responses={200: {"model": AppliedOut}})
def put_flow(
    key: str,
    body: Definition,
    response: Response,
    api_key: AdminKey,
    engine: EngineDep,
    clock: ClockDep,
    activate: Activate = False,
) -> AppliedOut:
    """Create or update flow `key`; the body's `key` (if given) must be the same."""
    given = body.setdefault("key", key)
    if given != key:
        raise errors.InvalidInput.field("key", f"must be {key!r}, the flow in the path")
    return _apply(body, response, engine, clock, activate)


def _apply(
    body: dict[str, Any], response: Response, engine: Engine, clock: Clock, activate: bool
) -> AppliedOut:
    with engine.begin() as conn:
        flow = store.apply(conn, clock, body, activate=activate)
    if flow["outcome"] != "created":
        response.status_code = 200
    return AppliedOut.model_validate(flow)


@router.get("/{key}")
def get_flow(
    key: str,
    api_key: ReadKey,
    engine: EngineDep,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> FlowOut:
    """The flow with the definition of its newest version (or of `version`)."""
    with engine.connect().execution_options(readonly=True) as conn:
        return FlowOut.model_validate(store.get(conn, key, version))


@router.post("/{key}/activate")
def activate_flow(key: str, api_key: AdminKey, engine: EngineDep, clock: ClockDep) -> FlowOut:
    """draft or paused -> active: the trigger starts runs, runs advance."""
    with engine.begin() as conn:
        return FlowOut.model_validate(lifecycle.activate(conn, clock, key))


@router.post("/{key}/pause")
def pause_flow(key: str, api_key: AdminKey, engine: EngineDep, clock: ClockDep) -> FlowOut:
    """active -> paused: no new runs; runs hold where they are and nothing is sent."""
    with engine.begin() as conn:
        return FlowOut.model_validate(lifecycle.pause(conn, clock, key))


@router.post("/{key}/resume")
def resume_flow(key: str, api_key: AdminKey, engine: EngineDep, clock: ClockDep) -> FlowOut:
    """paused -> active: runs continue where they were."""
    with engine.begin() as conn:
        return FlowOut.model_validate(lifecycle.resume(conn, clock, key))


@router.post("/{key}/archive")
def archive_flow(key: str, api_key: AdminKey, engine: EngineDep, clock: ClockDep) -> FlowOut:
    """Any status -> archived, for good: runs in progress exit ("flow archived")."""
    with engine.begin() as conn:
        return FlowOut.model_validate(lifecycle.archive(conn, clock, key))


@router.post("/{key}/enrol")
def enrol(
    key: str, body: EnrolIn, api_key: AdminKey, engine: EngineDep, clock: ClockDep
) -> EnrolOut:
    """Start runs of an active flow for one contact or many (any trigger; the entry rules
    and filter apply). Skipped contacts come back with the reason."""
    if (body.contact_id is None) == (body.contact_ids is None):
        raise errors.InvalidInput.field("contact_id", "give contact_id or contact_ids (not both)")
    ids = [body.contact_id] if body.contact_id is not None else body.contact_ids or []
    try:
        with engine.begin() as conn:
            result = enrolment.enrol_api(conn, clock, key, ids, body.properties)
    except errors.InvalidInput as exc:
        if body.contact_id is None or not exc.fields or exc.fields[0].field != "contact_ids[0]":
            raise
        raise errors.InvalidInput.field("contact_id", exc.fields[0].message) from None
    return EnrolOut.model_validate(result)


@router.post("/{key}/move-runs")
def move_runs(
    key: str,
    api_key: AdminKey,
    engine: EngineDep,
    clock: ClockDep,
    body: MoveRunsIn | None = None,
) -> MoveRunsOut:
    """Move runs in progress to the newest version (or `to_version`). A run moves only if
    the step it is at exists there; the others are listed as `kept`."""
    body = body or MoveRunsIn()
    with engine.begin() as conn:
        moved = lifecycle.move_runs(
            conn, clock, key, from_version=body.from_version, to_version=body.to_version
        )
    return MoveRunsOut.model_validate(moved)


@router.get("/{key}/stats")
def flow_stats(key: str, api_key: ReadKey, engine: EngineDep) -> StatsOut:
    """Per step: entered, waiting now, completed, exited, failed, converted, revenue; and
    the flow's totals with its first and last activity."""
    with engine.connect().execution_options(readonly=True) as conn:
        return StatsOut.model_validate(stats.flow_stats(conn, key))


@contacts_router.get("/{contact_id:int}/journeys")
def contact_journeys(
    contact_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    api_key: ReadKey,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = journeys.DEFAULT_LIMIT,
) -> JourneysOut:
    """Every run of the contact, newest first, with each step: when, what and why."""
    with engine.connect().execution_options(readonly=True) as conn:
        runs = journeys.for_contact(conn, contact_id, limit=limit)
    return JourneysOut.model_validate({"contact_id": contact_id, "data": runs})
