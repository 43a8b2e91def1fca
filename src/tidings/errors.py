"""One exception tree for the whole product. Each class's docstring is its default message;
the API maps them to HTTP statuses and the CLI to exit code 2, each in one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field, named by its path (`contacts[3].email`)."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class TidingsError(Exception):
    """Something went wrong."""

    status = 500
    code = "error"

    def __init__(self, message: str | None = None, *, fields: Sequence[FieldError] = ()) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.fields = list(fields)
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            body["fields"] = [f.as_dict() for f in self.fields]
        return {"error": body}


class ConfigError(TidingsError):
    """The configuration is not valid."""

    code = "config_error"


class InvalidInput(TidingsError):
    """The input is not valid."""

    status = 422
    code = "invalid_input"

    @classmethod
    def field(cls, field: str, message: str) -> InvalidInput:
        """An error about one field; the message names it."""
        return cls(f"{field}: {message}", fields=[FieldError(field, message)])


class PayloadTooLarge(TidingsError):
    """The request body is too large."""

    status = 413
    code = "payload_too_large"


class Unauthorized(TidingsError):
    """A valid API key is required."""

    status = 401
    code = "unauthorized"


class Forbidden(TidingsError):
    """This API key's scope does not allow that."""

    status = 403
    code = "forbidden"


class NotFound(TidingsError):
    """Not found."""

    status = 404
    code = "not_found"


class Conflict(TidingsError):
    """That conflicts with existing data."""

    status = 409
    code = "conflict"


class RenderFailed(TidingsError):
    """The template could not be rendered."""

    status = 422
    code = "render_failed"


class ChannelUnavailable(TidingsError):
    """The delivery channel (SMTP server, SMS provider) cannot be reached."""

    status = 502
    code = "channel_unavailable"
