"""`/v1/contacts`: create, read, change, delete and search contacts; their events and
consent records. Reads need a `read` (or `admin`) key, writes an `admin` key."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from tidings.api.deps import AdminKey, ClockDep, EngineDep, ReadKey
from tidings.api.routers.lists import ConsentIn, ContactId, Limit, Status, proof
from tidings.contacts import consent, pagination, profiles, search

router = APIRouter(prefix="/v1/contacts", tags=["contacts"])


class ListStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    status: Status = "subscribed"
    confirmed: bool = Field(
        False, description="The contact already confirmed (double opt-in lists only)."
    )


class ProfileFields(BaseModel):
    """The profile columns of a contact body (the single and the bulk API share them)."""

    model_config = ConfigDict(extra="forbid")

    external_id: str | None = None
    email: str | None = None
    phone: str | None = Field(None, description="E.164, or national in the contact's country.")
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = Field(None, description="BCP 47 tag, e.g. `pt-BR`.")
    timezone: str | None = Field(None, description="IANA name, e.g. `Europe/Berlin`.")
    country: str | None = Field(None, description="ISO 3166-1 alpha-2, e.g. `DE`.")
    lifecycle_stage: str | None = None


class _Profile(ProfileFields):
    lists: list[ListStatusIn] | None = None
    consent: ConsentIn | None = Field(None, description="Proof for the `lists` changes.")


class ContactIn(_Profile):
    attributes: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    score: int = 0


class ContactPatch(_Profile):
    attributes: dict[str, Any] | None = Field(None, description="Merged; null removes a key.")
    tags: list[str] | None = Field(None, description="Replaces every tag.")
    add_tags: list[str] | None = None
    remove_tags: list[str] | None = None
    score: int | None = None


class ListStatusOut(BaseModel):
    key: str
    status: Status


class ContactOut(BaseModel):
    id: int
    external_id: str | None
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    country: str | None
    lifecycle_stage: str | None
    score: int
    attributes: dict[str, Any]
    tags: list[str]
    lists: list[ListStatusOut]
    anonymous_ids: list[str]
    created_at: datetime
    updated_at: datetime


class ContactPage(BaseModel):
    data: list[ContactOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: int
    message_id: str
    type: str
    name: str | None
    properties: dict[str, Any]
    context: dict[str, Any]
    timestamp: datetime
    received_at: datetime
    user_id: str | None
    anonymous_id: str | None


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str | None


class ConsentOut(BaseModel):
    id: int
    list: str | None
    status: str
    source: str
    ip: str | None
    user_agent: str | None
    text: str | None
    text_hash: str | None
    at: datetime


class ConsentPage(BaseModel):
    data: list[ConsentOut]
    next_cursor: str | None


def _values(body: BaseModel) -> tuple[dict[str, Any], ConsentIn | None]:
    """The fields the client sent (so PATCH can tell null from absent), minus `consent`."""
    values = body.model_dump(exclude_unset=True)
    given = values.pop("consent", None)
    return values, ConsentIn.model_validate(given) if given is not None else None


@router.post("", status_code=201)
def create_contact(
    body: ContactIn, api_key: AdminKey, engine: EngineDep, clock: ClockDep
) -> ContactOut:
    values, given = _values(body)
    evidence = proof(api_key, given)
    with engine.begin() as conn:
        return ContactOut.model_validate(profiles.create(conn, clock, values, evidence))


@router.get("")
def search_contacts(
    api_key: ReadKey,
    engine: EngineDep,
    email: str | None = None,
    external_id: str | None = None,
    phone: str | None = None,
    tag: Annotated[list[str], Query(description="Repeatable; all must match.")] = [],  # noqa: B006
    list_key: Annotated[str | None, Query(alias="list", description="A list key.")] = None,
    list_status: Status | None = None,
    attribute: Annotated[
        list[str], Query(description="`name:value`, repeatable; JSON values (`30`, `true`).")
    ] = [],  # noqa: B006
    cursor: str | None = None,
    limit: Limit = pagination.DEFAULT_LIMIT,
) -> ContactPage:
    filters = search.Search(
        email=email,
        external_id=external_id,
        phone=phone,
        tags=tag,
        list_key=list_key,
        list_status=list_status,
        attributes=attribute,
    )
    with engine.connect().execution_options(readonly=True) as conn:
        page = search.contacts(conn, filters, cursor=cursor, limit=limit)
    return ContactPage.model_validate(page)


@router.get("/{contact_id:int}")
def get_contact(contact_id: ContactId, api_key: ReadKey, engine: EngineDep) -> ContactOut:
    with engine.connect().execution_options(readonly=True) as conn:
        return ContactOut.model_validate(profiles.get(conn, contact_id))


@router.patch("/{contact_id:int}")
def patch_contact(
    contact_id: ContactId, body: ContactPatch, api_key: AdminKey, engine: EngineDep, clock: ClockDep
) -> ContactOut:
    values, given = _values(body)
    evidence = proof(api_key, given)
    with engine.begin() as conn:
        contact = profiles.update_contact(conn, clock, contact_id, values, evidence)
    return ContactOut.model_validate(contact)


@router.delete("/{contact_id:int}", status_code=204)
def delete_contact(contact_id: ContactId, api_key: AdminKey, engine: EngineDep) -> Response:
    with engine.begin() as conn:
        profiles.delete_contact(conn, contact_id)
    return Response(status_code=204)


@router.get("/{contact_id:int}/events")
def contact_events(
    contact_id: ContactId,
    api_key: ReadKey,
    engine: EngineDep,
    type: str | None = None,
    name: str | None = None,
    cursor: str | None = None,
    limit: Limit = pagination.DEFAULT_LIMIT,
) -> EventPage:
    with engine.connect().execution_options(readonly=True) as conn:
        page = search.events(conn, contact_id, type=type, name=name, cursor=cursor, limit=limit)
    return EventPage.model_validate(page)


@router.get("/{contact_id:int}/consents")
def contact_consents(
    contact_id: ContactId,
    api_key: ReadKey,
    engine: EngineDep,
    cursor: str | None = None,
    limit: Limit = pagination.DEFAULT_LIMIT,
) -> ConsentPage:
    with engine.connect().execution_options(readonly=True) as conn:
        profiles.get_row(conn, contact_id)
        page = consent.for_contact(conn, contact_id, cursor=cursor, limit=limit)
    return ConsentPage.model_validate(page)
