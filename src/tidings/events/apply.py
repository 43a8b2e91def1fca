"""Placeholder: the worker's event applier (identify/alias/track -> contacts)."""

from __future__ import annotations

from sqlalchemy import Engine

from tidings.clock import Clock
from tidings.config import Settings


def process_pending(engine: Engine, clock: Clock, settings: Settings) -> int:
    """Apply events appended since the last call; returns how many were applied."""
    return 0
