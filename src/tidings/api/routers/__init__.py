"""Every router the app serves. Add new ones here."""

from fastapi import APIRouter

from tidings.api.routers import contacts, health, ingest, lists

ROUTERS: list[APIRouter] = [
    health.router,
    ingest.router,
    contacts.router,
    lists.router,
]
