"""What handlers receive, as `Annotated` aliases so signatures read as plain types."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from tidings import errors
from tidings.clock import Clock
from tidings.config import Settings
from tidings.keys import ApiKey, KeyVerifier


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


SettingsDep = Annotated[Settings, Depends(_settings)]
EngineDep = Annotated[Engine, Depends(_engine)]
ClockDep = Annotated[Clock, Depends(_clock)]


def presented_key(authorization: str | None) -> str:
    """The key from `Bearer KEY` or HTTP Basic with the key as user name (Segment's way)."""
    if not authorization:
        raise errors.Unauthorized("Send an API key: 'Authorization: Bearer KEY' or Basic auth.")
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            user = base64.b64decode(value, validate=True).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            raise errors.Unauthorized("The Basic credentials are not valid base64.") from None
        if user:
            return user
    raise errors.Unauthorized("Send an API key: 'Authorization: Bearer KEY' or Basic auth.")


def require(scope: str) -> Callable[[Request], ApiKey]:
    """A dependency that admits keys whose scope grants `scope` (admin grants all)."""

    def check(request: Request) -> ApiKey:
        verifier: KeyVerifier = request.app.state.keys
        key = verifier.verify(presented_key(request.headers.get("authorization")))
        if not key.allows(scope):
            raise errors.Forbidden(f"This key has scope '{key.scope}'; this needs '{scope}'.")
        return key

    return check


AdminKey = Annotated[ApiKey, Depends(require("admin"))]
ReadKey = Annotated[ApiKey, Depends(require("read"))]
WriteKey = Annotated[ApiKey, Depends(require("write"))]
