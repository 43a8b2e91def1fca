"""The app factory: settings, engine and clock come in; nothing is created at import time."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from sqlalchemy import Engine

from tidings import __version__
from tidings.api import errors as api_errors
from tidings.api import nul
from tidings.clock import Clock, SystemClock
from tidings.config import Settings
from tidings.db.engine import make_engine
from tidings.keys import KeyVerifier

DESCRIPTION = """Self-hosted marketing automation.

* **Ingest** (`/v1/identify`, `/v1/track`, `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias`,
  `/v1/batch`): Segment-compatible; HTTP Basic with the write key as user name.
* **Resources** (`/v1/contacts`, `/v1/lists`, ...): `Authorization: Bearer KEY`.
"""


def create_app(
    settings: Settings, engine: Engine | None = None, clock: Clock | None = None
) -> FastAPI:
    """The ASGI app for `settings`; pass an engine or clock to share them (tests, serve)."""
    app = FastAPI(title="Tidings", version=__version__, description=DESCRIPTION)
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings)
    app.state.clock = clock or SystemClock()
    app.state.keys = KeyVerifier(app.state.engine, settings.api_key_cache_seconds)
    api_errors.install(app)
    _include_routers(app)
    return app


def _include_routers(app: FastAPI) -> None:
    from tidings.api.routers import ROUTERS, ingest

    checked = [Depends(nul.refuse_nul_characters)]
    for router in ROUTERS:
        # ingest streams its body under a size limit and checks for NUL itself
        app.include_router(router, dependencies=[] if router is ingest.router else checked)


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (several API processes): settings from the env."""
    return create_app(Settings())
