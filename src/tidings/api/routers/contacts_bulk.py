"""`POST /v1/contacts/bulk`: create or update up to 1,000 contacts in one request.

All or nothing, like `/v1/batch`: when any item is bad the answer is 422 naming every bad
item (`contacts[3].email`) and nothing is stored. Items repeated in one request (same email
or external_id) count once, the last one winning."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tidings import errors
from tidings.api.deps import AdminKey, ClockDep, EngineDep
from tidings.api.routers.contacts import ProfileFields
from tidings.contacts import bulk

router = APIRouter(prefix="/v1/contacts", tags=["contacts"])
MAX_ITEMS = 1000


class BulkContact(ProfileFields):
    """One contact: matched by `external_id` when given, else by `email`. Given fields
    overwrite, missing or null ones are kept, `attributes` merge, `tags` are added."""

    attributes: dict[str, Any] | None = None
    tags: list[str] | None = None


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    contacts: list[BulkContact] = Field(min_length=1, max_length=MAX_ITEMS)
    list_key: str | None = Field(
        None,
        alias="list",
        description="Key of a list every contact joins as `subscribed` (with a consent "
        "record); existing memberships, unsubscribed ones included, are left alone.",
    )


class BulkRejected(BaseModel):
    index: int
    field: str
    message: str


class BulkOut(BaseModel):
    created: int
    updated: int
    rejected: list[BulkRejected] = Field(
        description="Always empty on success: a request with a bad item is refused whole."
    )


@router.post("/bulk")
def upsert_contacts(body: BulkIn, key: AdminKey, engine: EngineDep, clock: ClockDep) -> BulkOut:
    """Create or update many contacts at once (admin key)."""
    items = [item.model_dump(exclude_none=True) for item in body.contacts]
    with engine.begin() as conn:
        list_id = bulk.find_list(conn, body.list_key) if body.list_key else None
        result = bulk.upsert(conn, clock, items, list_id=list_id, source=f"api:{key.prefix}")
        if result.rejected:  # raising here rolls the whole request back
            raise _invalid(result.rejected)
    return BulkOut(created=result.created, updated=result.updated, rejected=[])


def _invalid(rejected: list[bulk.Rejected]) -> errors.InvalidInput:
    problems = [errors.FieldError(f"contacts[{r.index}].{r.field}", r.message) for r in rejected]
    summary = "; ".join(f"{p.field}: {p.message}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return errors.InvalidInput(summary + more, fields=problems)
