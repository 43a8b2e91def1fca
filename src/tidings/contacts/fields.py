"""Normalising contact fields, and mapping free-form traits (Segment `identify`, CSV rows,
API bodies) onto the profile. One set of rules for every way a contact arrives.

Each normaliser returns the canonical value or raises `InvalidInput` naming the field."""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email
from phonenumbers import PhoneMetadata
from phonenumbers import phonenumberutil as _pnu

from tidings import errors

#: Profile columns a contact has besides its custom attributes.
PROFILE_FIELDS = (
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "locale",
    "timezone",
    "country",
    "lifecycle_stage",
)

#: Trait names (lower-cased, without `_`/`-`/spaces) that land on a profile column.
TRAIT_ALIASES = {
    "email": "email",
    "emailaddress": "email",
    "phone": "phone",
    "phonenumber": "phone",
    "mobile": "phone",
    "firstname": "first_name",
    "lastname": "last_name",
    "locale": "locale",
    "language": "locale",
    "timezone": "timezone",
    "tz": "timezone",
    "country": "country",
    "countrycode": "country",
    "lifecyclestage": "lifecycle_stage",
    "stage": "lifecycle_stage",
}


def alias_key(name: str) -> str:
    """`First Name`, `first_name`, `firstName` -> `firstname`."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


# A strict subset of what email-validator accepts: a plain ASCII dot-atom local part and a
# letters-digits-hyphens domain with a dotted, letter-ending TLD. For these its only
# normalisation is lower-casing the domain (we lower-case it all), so the fast path returns
# exactly what `validate_email` would, ~50x sooner. Anything else (Unicode, quoting, IDNA
# `xn--` or other `??--` labels, reserved domains, long parts) goes to email-validator.
# tests/contacts/test_bulk.py proves the agreement with hypothesis.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_FAST_EMAIL = re.compile(
    rf"{_ATEXT}(?:\.{_ATEXT})*@(?:{_LABEL}\.)+[A-Za-z0-9-]{{0,62}}[A-Za-z]", re.ASCII
)
_RESERVED_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _fast_email(value: str) -> str | None:
    """The normalised address when `value` is in the plain-ASCII subset, else None."""
    if len(value) > 254 or "--" in value or not _FAST_EMAIL.fullmatch(value):
        return None
    local, _, domain = value.partition("@")
    tld = domain.rpartition(".")[2]
    if len(local) > 64 or len(domain) > 253 or tld[0] == "-" or tld.lower() in _RESERVED_TLDS:
        return None
    return value.lower()


def email(value: str, where: str = "email") -> str:
    """Syntax-checked (no DNS), IDNA-decoded, lower-cased address."""
    fast = _fast_email(value.strip())
    return fast if fast is not None else _checked_email(value, where)


@functools.lru_cache(maxsize=65536)
def _checked_email(value: str, where: str) -> str:
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise errors.InvalidInput.field(where, str(exc)) from None
    return checked.normalized.lower()


@functools.lru_cache(maxsize=65536)
def phone(value: str, country: str | None = None, where: str = "phone") -> str:
    """E.164 (`+4930123456`); numbers without `+` are read in the contact's country."""
    parsed = _parse_e164(value)
    if parsed is None:
        try:
            parsed = phonenumbers.parse(value, country)
        except phonenumbers.NumberParseException:
            raise errors.InvalidInput.field(
                where, f"{value!r} is not a phone number (use +<country code><number>)"
            ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise errors.InvalidInput.field(where, f"{value!r} is not a valid phone number")
    result: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return result


# Numbers already written as `+<digits>` (what exports hold) skip the part of
# `phonenumbers.parse` that looks for a number inside free text, extensions and letters:
# ~35 of its ~55 µs per number. The rest is parse's own code for such a string, step by
# step, with its own helpers, so the result is the same `PhoneNumber` (country code,
# national number, leading zeros); validity is still `is_valid_number`'s to decide.
# Anything unusual (no known country code, odd lengths) takes the full parse.
# tests/contacts/test_bulk.py proves the agreement with hypothesis.
_PLUS_DIGITS = re.compile(r"\+[1-9][0-9]{4,15}", re.ASCII)
_NO_NATIONAL_NUMBER = frozenset(
    {
        _pnu.ValidationResult.TOO_SHORT,
        _pnu.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
        _pnu.ValidationResult.INVALID_LENGTH,
    }
)


def _parse_e164(value: str) -> phonenumbers.PhoneNumber | None:
    """`phonenumbers.parse(value)` when `value` is `+` and 5-16 digits, else None."""
    if not _PLUS_DIGITS.fullmatch(value):
        return None
    country_code, national = _pnu._extract_country_code(value[1:])
    if country_code == 0:
        return None
    region = _pnu.region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return None
    _, stripped, _ = _pnu._maybe_strip_national_prefix_carrier_code(national, metadata)
    if _pnu._test_number_length(stripped, metadata) not in _NO_NATIONAL_NUMBER:
        national = stripped
    if not _pnu._MIN_LENGTH_FOR_NSN <= len(national) <= _pnu._MAX_LENGTH_FOR_NSN:
        return None
    parsed = phonenumbers.PhoneNumber(country_code=country_code)
    _pnu._set_italian_leading_zeros_for_phone_number(national, parsed)
    parsed.national_number = int(national)
    return parsed


@functools.cache
def _zones() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def timezone(value: str, where: str = "timezone") -> str:
    """A canonical IANA zone name (`Europe/Berlin`), matched case-insensitively."""
    found = _zones().get(value.strip().lower())
    if found is None:
        raise errors.InvalidInput.field(where, f"{value!r} is not an IANA time zone")
    return found


@functools.lru_cache(maxsize=4096)
def locale(value: str, where: str = "locale") -> str:
    """A BCP 47 tag (`pt-BR`) for any known locale, written with `-` or `_`."""
    try:
        parsed = Locale.parse(value.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise errors.InvalidInput.field(where, f"{value!r} is not a known locale") from None
    return "-".join(p for p in (parsed.language, parsed.script, parsed.territory) if p)


@functools.cache
def _countries() -> frozenset[str]:
    return frozenset(str(code) for code in Locale("en").territories if str(code).isalpha())


def country(value: str, where: str = "country") -> str:
    """An ISO 3166-1 alpha-2 code, upper case."""
    code = value.strip().upper()
    if code not in _countries():
        raise errors.InvalidInput.field(where, f"{value!r} is not an ISO 3166 country code")
    return code


def _text(value: Any, where: str, limit: int) -> str:
    text = value.strip() if isinstance(value, str) else str(value)
    if len(text) > limit:
        raise errors.InvalidInput.field(where, f"longer than {limit} characters")
    return text


@dataclass
class ContactChanges:
    """What an input says about a contact: profile columns to set (None clears one) and
    custom attributes to merge in."""

    profile: dict[str, str | None] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.profile and not self.attributes


def normalise_profile(values: Mapping[str, Any], where: str = "") -> dict[str, str | None]:
    """Validate and normalise profile columns; all problems are reported together."""
    out: dict[str, str | None] = {}
    problems: list[errors.FieldError] = []
    for name in PROFILE_FIELDS:
        if name not in values:
            continue
        try:
            out[name] = _normalise_one(name, values[name], values, f"{where}{name}")
        except errors.InvalidInput as exc:
            problems.extend(exc.fields)
    if problems:
        raise errors.InvalidInput(
            "; ".join(f"{p.field}: {p.message}" for p in problems), fields=problems
        )
    return out


def _normalise_one(name: str, value: Any, values: Mapping[str, Any], where: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    checked = _CHECKED.get(name)
    if checked is None:
        return _text(value, where, 255)
    if not isinstance(value, str):
        raise errors.InvalidInput.field(where, "must be a string")
    return checked(value, values, where)


def _phone_in_country(value: str, values: Mapping[str, Any], where: str) -> str:
    region = values.get("country")
    region = region.strip().upper() if isinstance(region, str) and region.strip() else None
    return phone(value, region, where)


#: The normaliser of each profile field that must be a string with a format (the others
#: are free text); a table rather than a chain of `if`s, as this runs for every cell of an
#: import.
_CHECKED: dict[str, Callable[[str, Mapping[str, Any], str], str]] = {
    "email": lambda value, _values, where: email(value, where),
    "phone": _phone_in_country,
    "locale": lambda value, _values, where: locale(value, where),
    "timezone": lambda value, _values, where: timezone(value, where),
    "country": lambda value, _values, where: country(value, where),
}


def from_traits(traits: Mapping[str, Any], where: str = "traits.") -> ContactChanges:
    """Map Segment-style traits onto the profile; unknown traits become attributes.

    `name` fills first/last name when those are not given; `address.country` fills country."""
    profile: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for key, value in traits.items():
        column = TRAIT_ALIASES.get(alias_key(key))
        if column is not None:
            profile[column] = value
        else:
            attributes[key] = value
    _fill_from_name(profile, traits.get("name"))
    address = traits.get("address")
    if "country" not in profile and isinstance(address, Mapping) and address.get("country"):
        profile["country"] = address["country"]
    return ContactChanges(normalise_profile(profile, where), attributes)


def _fill_from_name(profile: dict[str, Any], name: Any) -> None:
    if not isinstance(name, str) or not name.strip():
        return
    first, _, last = name.strip().partition(" ")
    profile.setdefault("first_name", first)
    if last:
        profile.setdefault("last_name", last.strip())
