"""Every router the app serves. Add new ones here."""

from fastapi import APIRouter

from tidings.api.routers import health

ROUTERS: list[APIRouter] = [health.router]
