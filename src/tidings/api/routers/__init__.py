"""Every router the app serves. Add new ones here."""

from fastapi import APIRouter

from tidings.api.routers import contacts, health, lists

ROUTERS: list[APIRouter] = [
    health.router,
    contacts.router,
    lists.router,
]
