"""`/v1/lists`: lists (subscription topics) by key, and each contact's status on them.

Reads need a `read` (or `admin`) key, writes an `admin` key. Every status change writes a
consent record with source `api:<key prefix>`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from tidings.api.deps import AdminKey, ClockDep, EngineDep, ReadKey
from tidings.contacts import consent, lists, pagination
from tidings.keys import ApiKey

router = APIRouter(prefix="/v1/lists", tags=["lists"])

MAX_ID = 2**63 - 1
ContactId = Annotated[int, Path(ge=1, le=MAX_ID)]
Status = Literal["subscribed", "unsubscribed", "pending"]
Limit = Annotated[int, Query(ge=1, le=pagination.MAX_LIMIT)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListIn(_Strict):
    key: str = Field(description="Slug: a-z, 0-9, '-', '_'; unique; never changes.")
    name: str
    description: str = ""
    double_opt_in: bool = Field(False, description="Subscribing via the API records `pending`.")


class ListPatch(_Strict):
    name: str | None = None
    description: str | None = None
    double_opt_in: bool | None = None


class MemberCounts(BaseModel):
    pending: int
    subscribed: int
    unsubscribed: int


class ListOut(BaseModel):
    key: str
    name: str
    description: str
    double_opt_in: bool
    member_counts: MemberCounts
    created_at: datetime
    updated_at: datetime


class ListsOut(BaseModel):
    data: list[ListOut]


class ConsentIn(_Strict):
    """What the contact saw and sent when they agreed (or declined)."""

    text: str | None = Field(None, description="The consent wording shown to the contact.")
    ip: str | None = Field(None, description="The contact's IP address (not your server's).")
    user_agent: str | None = None


class MembershipIn(_Strict):
    status: Status
    consent: ConsentIn | None = None
    confirmed: bool = Field(
        False, description="The contact already confirmed (double opt-in lists only)."
    )


class MembershipOut(BaseModel):
    list: str
    contact_id: int
    status: Status
    changed: bool


class BulkMembershipIn(MembershipIn):
    contact_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        min_length=1, max_length=lists.MAX_BULK
    )


class BulkMembershipOut(BaseModel):
    list: str
    status: Status
    changed: int
    unchanged: int


class MemberOut(BaseModel):
    contact_id: int
    email: str | None
    external_id: str | None
    status: Status
    created_at: datetime
    updated_at: datetime


class MembersOut(BaseModel):
    data: list[MemberOut]
    next_cursor: str | None


def proof(key: ApiKey, given: ConsentIn | None, where: str = "consent.") -> consent.Proof:
    """The consent proof for a change made with `key`, checked."""
    given = given or ConsentIn()
    return consent.Proof(
        source=f"api:{key.prefix}", ip=given.ip, user_agent=given.user_agent, text=given.text
    ).checked(where)


@router.post("", status_code=201)
def create_list(body: ListIn, key: AdminKey, engine: EngineDep, clock: ClockDep) -> ListOut:
    with engine.begin() as conn:
        return ListOut.model_validate(lists.create(conn, clock, body.model_dump()))


@router.get("")
def all_lists(key: ReadKey, engine: EngineDep) -> ListsOut:
    with engine.connect().execution_options(readonly=True) as conn:
        return ListsOut.model_validate({"data": lists.list_all(conn)})


@router.get("/{key}")
def get_list(key: str, api_key: ReadKey, engine: EngineDep) -> ListOut:
    with engine.connect().execution_options(readonly=True) as conn:
        return ListOut.model_validate(lists.get(conn, key))


@router.patch("/{key}")
def patch_list(
    key: str, body: ListPatch, api_key: AdminKey, engine: EngineDep, clock: ClockDep
) -> ListOut:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    with engine.begin() as conn:
        return ListOut.model_validate(lists.update_list(conn, clock, key, changes))


@router.delete("/{key}", status_code=204)
def delete_list(key: str, api_key: AdminKey, engine: EngineDep) -> Response:
    with engine.begin() as conn:
        lists.delete_list(conn, key)
    return Response(status_code=204)


@router.put("/{key}/members/{contact_id:int}")
def put_member(
    key: str,
    contact_id: ContactId,
    body: MembershipIn,
    api_key: AdminKey,
    engine: EngineDep,
    clock: ClockDep,
) -> MembershipOut:
    evidence = proof(api_key, body.consent)
    with engine.begin() as conn:
        done = lists.set_status(
            conn, clock, key, contact_id, body.status, evidence, confirmed=body.confirmed
        )
    return MembershipOut.model_validate(done)


@router.delete("/{key}/members/{contact_id:int}", status_code=204)
def delete_member(
    key: str, contact_id: ContactId, api_key: AdminKey, engine: EngineDep, clock: ClockDep
) -> Response:
    with engine.begin() as conn:
        lists.remove(conn, clock, key, contact_id, proof(api_key, None))
    return Response(status_code=204)


@router.post("/{key}/members")
def bulk_members(
    key: str, body: BulkMembershipIn, api_key: AdminKey, engine: EngineDep, clock: ClockDep
) -> BulkMembershipOut:
    evidence = proof(api_key, body.consent)
    with engine.begin() as conn:
        done = lists.set_status_many(
            conn, clock, key, body.contact_ids, body.status, evidence, confirmed=body.confirmed
        )
    return BulkMembershipOut.model_validate(done)


@router.get("/{key}/members")
def list_members(
    key: str,
    api_key: ReadKey,
    engine: EngineDep,
    status: Status | None = None,
    cursor: str | None = None,
    limit: Limit = pagination.DEFAULT_LIMIT,
) -> MembersOut:
    with engine.connect().execution_options(readonly=True) as conn:
        page = lists.members(conn, key, status=status, cursor=cursor, limit=limit)
    return MembersOut.model_validate(page)
