"""Opaque keyset cursors shared by every paginated listing.

A cursor is the sort key of the last row a client has seen, tagged with the listing it
came from and a checksum, base64url-encoded. It is not a secret (it only holds positions
the client has already read); the checksum just makes a mangled or edited cursor a clear
422 instead of a silently wrong page."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from tidings import errors

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

T = TypeVar("T")
Position = tuple[Any, ...]

_PEPPER = b"tidings-cursor-v1:"


def _checksum(body: bytes) -> str:
    return hashlib.sha256(_PEPPER + body).hexdigest()[:12]


def encode(listing: str, *position: int | str | datetime) -> str:
    """A cursor for `listing` pointing after `position` (ids, strings, aware datetimes)."""
    values = [v.isoformat() if isinstance(v, datetime) else v for v in position]
    body = json.dumps([listing, *values], separators=(",", ":")).encode()
    token = base64.urlsafe_b64encode(body).decode().rstrip("=")
    return f"{token}.{_checksum(body)}"


def decode(listing: str, cursor: str, shape: Sequence[type]) -> Position:
    """The position in `cursor`, checked against `listing` and the types in `shape`
    (`int`, `str` or `datetime`). Anything else is `InvalidInput` naming `cursor`."""
    bad = errors.InvalidInput.field("cursor", "is not a cursor returned by this listing")
    token, _, check = cursor.partition(".")
    try:
        body = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        values = json.loads(body)
    except (binascii.Error, ValueError):
        raise bad from None
    if check != _checksum(body) or not isinstance(values, list) or len(values) != len(shape) + 1:
        raise bad
    if values[0] != listing:
        raise bad
    try:
        return tuple(_typed(value, kind) for value, kind in zip(values[1:], shape, strict=True))
    except (TypeError, ValueError):
        raise bad from None


def _typed(value: Any, kind: type) -> Any:
    if kind is datetime:
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            raise ValueError("naive datetime in cursor")
        return when
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError("expected an integer")
    if kind is str and not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def check_limit(limit: int) -> int:
    """`limit` if it is a page size we serve, else `InvalidInput` naming `limit`."""
    if not 1 <= limit <= MAX_LIMIT:
        raise errors.InvalidInput.field("limit", f"must be between 1 and {MAX_LIMIT}")
    return limit


def page(
    rows: Sequence[T], limit: int, cursor_of: Callable[[T], str]
) -> tuple[list[T], str | None]:
    """Split `limit + 1` fetched rows into the page and the cursor for the next one
    (None when this is the last page)."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return items, (cursor_of(items[-1]) if more and items else None)
