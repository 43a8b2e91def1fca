"""The Segment-compatible ingest API: `/v1/identify`, `/track`, `/page`, `/screen`, `/group`,
`/alias` and `/batch`, authenticated with the write key (HTTP Basic user name or Bearer).

Handlers read the body themselves: the size limit holds while it streams in and after gzip
is undone, and the JSON is parsed once, by orjson, instead of by FastAPI's body models.
The models in `tidings.events.spec` still document every body in OpenAPI."""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from tidings import errors
from tidings.api.deps import WriteKey
from tidings.events import ingest, spec

router = APIRouter(prefix="/v1", tags=["ingest"])

ACCEPTED = b'{"success":true}'

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key."},
    403: {"description": "The key's scope does not include `write`."},
    413: {"description": "The body, or one call in it (named by index), is too large."},
    422: {"description": "A call is not valid; `error.fields` names each bad field."},
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it grows past `limit` bytes, with
    `Content-Encoding: gzip` undone (the unzipped size is limited the same way)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        return gunzip(body, limit)
    if encoding != "identity":
        raise errors.InvalidInput.field("Content-Encoding", "only gzip is supported")
    return body


def gunzip(body: bytes, limit: int) -> bytes:
    """`body` unzipped, never holding more than `limit` + 1 bytes of output (no zip bombs)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise errors.InvalidInput.field("body", "is not valid gzip") from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise _too_large(limit, "unzipped ")
    if not inflater.eof:
        raise errors.InvalidInput.field("body", "the gzip stream is cut short")
    return plain


def _too_large(limit: int, what: str = "") -> errors.PayloadTooLarge:
    message = f"The {what}body is larger than {limit} bytes."
    return errors.PayloadTooLarge(message, fields=[errors.FieldError("body", message)])


def _endpoint(kind: str) -> Callable[[Request, Any], Awaitable[Response]]:
    async def accept(request: Request, key: WriteKey) -> Response:
        state = request.app.state
        settings = state.settings
        limit = settings.max_batch_bytes if kind == "batch" else settings.max_event_bytes
        body = await read_body(request, limit)
        await run_in_threadpool(
            ingest.ingest, state.engine, state.clock, settings, kind, body, key.prefix
        )
        return Response(ACCEPTED, media_type="application/json")

    accept.__name__ = f"ingest_{kind}"
    return accept


def _openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = spec.inline_schema(model)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


for _kind in ingest.KINDS:
    _model = spec.MODELS[_kind]
    router.add_api_route(
        f"/{_kind}",
        _endpoint(_kind),
        methods=["POST"],
        summary=f"Ingest {'a batch of calls' if _kind == 'batch' else f'one {_kind} call'}",
        description=inspect.cleandoc(_model.__doc__ or ""),
        response_model=spec.Accepted,
        responses=_ERRORS,
        openapi_extra=_openapi_body(_model),
    )
