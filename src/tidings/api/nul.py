"""PostgreSQL cannot store the NUL character (U+0000) in text or JSON, and SQLite cuts
strings at it: a request carrying one is refused with 422 naming where it is, on every
resource route, before any handler runs. (Ingest checks its own bodies while it streams.)"""

from __future__ import annotations

import orjson
from fastapi import Request

from tidings import errors, nul


async def refuse_nul_characters(request: Request) -> None:
    """A route dependency: 422 when the path, query or JSON body holds a NUL character."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise _refused(f"path.{name}")
    for name, value in request.query_params.multi_items():
        if "\x00" in value or "\x00" in name:
            raise _refused(f"query.{name}")
    body = await request.body()
    if b"\\u0000" in body or b"\x00" in body:  # cheap test first; parse only on a hit
        try:
            found = nul.find(orjson.loads(body), "body")
        except orjson.JSONDecodeError:
            found = "body"
        if found:
            raise _refused(found)


def _refused(field: str) -> errors.InvalidInput:
    return errors.InvalidInput.field(field, nul.MESSAGE)
