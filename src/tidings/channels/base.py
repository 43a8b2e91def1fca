"""The one seam between the sender and the outside world: a `Transport` takes finished
messages (`Outgoing`) and answers each with a `Reply`.

A transport may hand several messages over at once (`concurrency`): the sender never has
more than that many in flight on one transport, and records each as `sending` before it
is submitted, so a crash mid hand-off leaves at most `concurrency` messages `unknown`."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal, Protocol

#: sent: the server took it (2xx). retry: it did not, and trying again later is safe (4xx,
#: or the connection failed before the message's end was sent). failed: refused for good
#: (5xx). unknown: the message's end was sent but no reply came (connection lost,
#: timeout): the server may have taken it, so it must not be sent again.
Outcome = Literal["sent", "retry", "failed", "unknown"]


@dataclass(frozen=True)
class Outgoing:
    """A finished email: the envelope and the exact bytes (CRLF line ends, signed)."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    #: The From address's domain: transports route by it (`TIDINGS_SMTP_ROUTES`).
    sender_domain: str
    #: The ledger row, if any (None for `tidings send-test`).
    message_id: int | None = None
    #: The Message-ID header without brackets, and the Subject: what the catcher lists.
    message_ref: str | None = None
    subject: str | None = None
    #: Whether the message needs SMTPUTF8 (an address with a non-ASCII local part).
    smtputf8: bool = False


@dataclass(frozen=True)
class Reply:
    """What became of one `Outgoing`."""

    outcome: Outcome
    #: The SMTP reply code (250, 451, 550...), None when no reply came.
    code: int | None = None
    #: The RFC 3463 enhanced status code from the reply (`5.1.1`), if it gave one.
    status: str | None = None
    #: The server's words, or what went wrong on our side.
    text: str = ""


class Transport(Protocol):
    """Delivers `Outgoing` messages. Thread-safe: `submit` may be called from any thread."""

    @property
    def concurrency(self) -> int:
        """How many messages it hands over at once, at most."""
        ...

    def submit(self, message: Outgoing) -> Future[Reply]:
        """Start handing `message` over; the future's result is its `Reply` (never an
        exception: failures are replies)."""
        ...

    def check(self) -> None:
        """Connect once and say hello: raises `errors.ChannelUnavailable` naming the
        problem (bad credentials, no server...). Used at start-up and by `send-test`."""
        ...

    def close(self) -> None:
        """Close every connection; messages in flight finish first."""
        ...
