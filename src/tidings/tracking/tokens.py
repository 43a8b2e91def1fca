"""Signed tokens for everything that leaves Tidings in a message: the open pixel, tracked
links, unsubscribe and preference links, double opt-in confirmations and the VERP envelope
sender that lets a bounce name its message.

A token is a purpose byte and a few unsigned numbers (a message id, a link's index...),
followed by the first 16 bytes (128 bits) of an HMAC-SHA256 of them under a key derived
from the server secret for that purpose alone, so a click token is never accepted as an
unsubscribe token. Tokens carry no expiry: a message's links keep working as long as the
message is kept. Checking is constant-time; a token that does not check out is `None`
(the endpoints answer a plain 404 and change nothing).

Links use base64url; VERP addresses use lower-case base32, because some mail servers
change the case of an address's local part."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

#: Each purpose's byte: it is signed, and it never changes once tokens are out.
PURPOSES = {
    "open": 1,
    "click": 2,
    "unsubscribe": 3,
    "preferences": 4,
    "confirm": 5,
    "bounce": 6,
}
MAC_BYTES = 16
#: Longest token accepted for reading (a few numbers never need more).
MAX_TOKEN = 120


class Tokens:
    """Makes and reads the tokens of one server secret."""

    def __init__(self, secret: str) -> None:
        root = secret.encode()
        self._macs = {
            purpose: hmac.new(
                hmac.digest(root, b"tidings token: " + purpose.encode(), "sha256"),
                digestmod=hashlib.sha256,
            )
            for purpose in PURPOSES
        }

    def make(self, purpose: str, *numbers: int) -> str:
        """A base64url token for `numbers` (each >= 0) under `purpose`."""
        raw = self._signed(purpose, numbers)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def read(self, purpose: str, token: str, count: int) -> tuple[int, ...] | None:
        """The `count` numbers in a base64url `token` of `purpose`, or None if it is not
        one of ours (tampered, truncated, another purpose, another secret)."""
        if not token or len(token) > MAX_TOKEN:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        return self._checked(purpose, raw, count)

    def make_address_part(self, purpose: str, *numbers: int) -> str:
        """Like `make`, in lower-case base32: for the local part of an email address."""
        raw = self._signed(purpose, numbers)
        return base64.b32encode(raw).rstrip(b"=").decode().lower()

    def read_address_part(self, purpose: str, token: str, count: int) -> tuple[int, ...] | None:
        """Like `read`, for a token made by `make_address_part` (any letter case)."""
        if not token or len(token) > MAX_TOKEN:
            return None
        try:
            raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        except (binascii.Error, ValueError):
            return None
        return self._checked(purpose, raw, count)

    def _signed(self, purpose: str, numbers: tuple[int, ...]) -> bytes:
        payload = bytes([PURPOSES[purpose]]) + b"".join(_varint(n) for n in numbers)
        return payload + self._mac(purpose, payload)

    def _mac(self, purpose: str, payload: bytes) -> bytes:
        mac = self._macs[purpose].copy()
        mac.update(payload)
        return mac.digest()[:MAC_BYTES]

    def _checked(self, purpose: str, raw: bytes, count: int) -> tuple[int, ...] | None:
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(payload) < 2 or payload[0] != PURPOSES[purpose]:
            return None
        if not hmac.compare_digest(mac, self._mac(purpose, payload)):
            return None
        numbers = _read_varints(payload[1:])
        return numbers if numbers is not None and len(numbers) == count else None


def _varint(number: int) -> bytes:
    if number < 0:
        raise ValueError("token numbers are never negative")
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _read_varints(data: bytes) -> tuple[int, ...] | None:
    numbers: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            numbers.append(value)
            value = shift = 0
        elif shift > 63:
            return None
    return tuple(numbers) if shift == 0 else None
