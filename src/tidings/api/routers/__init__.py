"""Every router the app serves. Add new ones here."""

from fastapi import APIRouter

from tidings.api.routers import (
    contacts,
    contacts_bulk,
    flows,
    health,
    ingest,
    lists,
    segments,
)

ROUTERS: list[APIRouter] = [
    health.router,
    ingest.router,
    contacts_bulk.router,
    contacts.router,
    lists.router,
    segments.router,
    flows.router,
    flows.contacts_router,
]
