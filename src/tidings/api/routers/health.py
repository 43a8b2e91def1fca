"""Liveness and readiness for load balancers and `make run` users."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from tidings import __version__
from tidings.api.deps import EngineDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(engine: EngineDep) -> dict[str, str]:
    """`ok` when the database answers."""
    with engine.connect().execution_options(readonly=True) as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__}
