"""`/v1/segments`: stored segments by key, their members, previews of unsaved rules and
explanations for one contact.

Reads need a `read` (or `admin`) key, writes an `admin` key. A rule is checked in full
before anything is stored: problems come back as 422 naming their path (`rule.all[2]...`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from tidings.api.deps import AdminKey, ClockDep, EngineDep, ReadKey
from tidings.contacts import pagination
from tidings.segments import definitions, reading

router = APIRouter(prefix="/v1/segments", tags=["segments"])

MAX_ID = 2**63 - 1
Limit = Annotated[int, Query(ge=1, le=pagination.MAX_LIMIT)]
RULE_HELP = 'A condition (docs/conditions.md), e.g. {"attribute": "country", "eq": "DE"}.'


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegmentIn(_Strict):
    key: str = Field(description="Slug: a-z, 0-9, '-', '_'; unique; never changes.")
    name: str
    description: str = ""
    rule: Any = Field(description=RULE_HELP)


class SegmentPatch(_Strict):
    name: str | None = None
    description: str | None = None
    rule: Any = Field(None, description=RULE_HELP)


class SegmentOut(BaseModel):
    key: str
    name: str
    description: str
    rule: Any
    member_count: int
    created_at: datetime
    updated_at: datetime
    rebuilt_at: datetime | None


class SegmentsOut(BaseModel):
    data: list[SegmentOut]


class PreviewIn(_Strict):
    rule: Any = Field(description=RULE_HELP)
    sample: int = Field(10, ge=0, le=reading.MAX_SAMPLE, description="How many to show.")


class SampleContact(BaseModel):
    id: int
    email: str | None
    external_id: str | None


class PreviewOut(BaseModel):
    count: int
    sample: list[SampleContact]


class MemberOut(BaseModel):
    contact_id: int
    email: str | None
    external_id: str | None
    entered_at: datetime


class MembersOut(BaseModel):
    data: list[MemberOut]
    next_cursor: str | None


class ExplainOut(BaseModel):
    segment: str
    contact_id: int
    holds: bool = Field(description="Whether the rule holds for the contact now.")
    member: bool = Field(description="Whether the contact is a stored member.")
    explanation: dict[str, Any] = Field(
        description="`{path, holds, rule, seen?, children?}` for every part of the rule."
    )


@router.post("", status_code=201)
def create_segment(
    body: SegmentIn, key: AdminKey, engine: EngineDep, clock: ClockDep
) -> SegmentOut:
    with engine.begin() as conn:
        return SegmentOut.model_validate(definitions.create(conn, clock, body.model_dump()))


@router.get("")
def all_segments(key: ReadKey, engine: EngineDep) -> SegmentsOut:
    with engine.connect().execution_options(readonly=True) as conn:
        return SegmentsOut.model_validate({"data": definitions.list_all(conn)})


@router.post("/preview")
def preview(body: PreviewIn, key: ReadKey, engine: EngineDep, clock: ClockDep) -> PreviewOut:
    with engine.connect().execution_options(readonly=True) as conn:
        return PreviewOut.model_validate(reading.preview(conn, clock, body.rule, body.sample))


@router.get("/{key}")
def get_segment(key: str, api_key: ReadKey, engine: EngineDep) -> SegmentOut:
    with engine.connect().execution_options(readonly=True) as conn:
        return SegmentOut.model_validate(definitions.get(conn, key))


@router.patch("/{key}")
def patch_segment(
    key: str, body: SegmentPatch, api_key: AdminKey, engine: EngineDep, clock: ClockDep
) -> SegmentOut:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    with engine.begin() as conn:
        return SegmentOut.model_validate(definitions.update_segment(conn, clock, key, changes))


@router.delete("/{key}", status_code=204)
def delete_segment(key: str, api_key: AdminKey, engine: EngineDep) -> Response:
    with engine.begin() as conn:
        definitions.delete_segment(conn, key)
    return Response(status_code=204)


@router.get("/{key}/members")
def members(
    key: str,
    api_key: ReadKey,
    engine: EngineDep,
    cursor: str | None = None,
    limit: Limit = pagination.DEFAULT_LIMIT,
) -> MembersOut:
    with engine.connect().execution_options(readonly=True) as conn:
        page = reading.members(conn, key, cursor=cursor, limit=limit)
    return MembersOut.model_validate(page)


@router.get("/{key}/explain")
def explain(
    key: str,
    api_key: ReadKey,
    engine: EngineDep,
    clock: ClockDep,
    contact_id: Annotated[int, Query(ge=1, le=MAX_ID)],
) -> ExplainOut:
    with engine.connect().execution_options(readonly=True) as conn:
        return ExplainOut.model_validate(reading.explain(conn, clock, key, contact_id))
