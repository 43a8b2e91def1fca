"""The one place where errors become HTTP responses: always JSON, always naming the field."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tidings import errors


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def fields_from_pydantic(problems: Any, prefix: tuple[Any, ...] = ()) -> list[errors.FieldError]:
    """Pydantic/FastAPI validation problems as our FieldErrors (`body.contacts[2].email`)."""
    return [
        errors.FieldError(_field_path((*prefix, *p.get("loc", ()))) or "body", p.get("msg", ""))
        for p in problems
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.TidingsError)
    async def _tidings(_: Request, exc: errors.TidingsError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Basic"} if exc.status == 401 else None
        return JSONResponse(exc.as_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = fields_from_pydantic(exc.errors())
        summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:5])
        err = errors.InvalidInput(summary or None, fields=fields)
        return JSONResponse(err.as_dict(), status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        body = {"error": {"code": f"http_{exc.status_code}", "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
