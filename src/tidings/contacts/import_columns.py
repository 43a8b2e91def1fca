"""Where each CSV column goes: header recognition (Mailchimp, HubSpot, our own export),
`--map COLUMN=FIELD` overrides, and one CSV row as a `bulk.upsert` item.

Headers are recognised case-insensitively; other columns become attributes under a
snake_case key. Empty cells are left out, so they keep what is stored.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from babel import Locale

from tidings import errors
from tidings.contacts import exporter, fields

#: Header names (as `fields.alias_key` spells them) that exports use for profile columns,
#: beyond the trait aliases every input shares. `CC` is Mailchimp's country code,
#: `Record ID` HubSpot's contact id.
IMPORT_ALIASES = {
    **fields.TRAIT_ALIASES,
    "cc": "country",
    "countryregion": "country",
    "externalid": "external_id",
    "userid": "external_id",
    "recordid": "external_id",
    "mobilephonenumber": "phone",
    "fname": "first_name",  # Mailchimp merge tags
    "lname": "last_name",
    "tags": "tags",
}
TARGETS = (*fields.PROFILE_FIELDS, "tags", "ignore", "attributes.NAME")


@dataclass(frozen=True)
class Column:
    """Where one CSV column goes: `kind` is profile | attribute | json_attribute | tags |
    ignore; `name` the profile field or attribute key."""

    kind: str
    name: str = ""


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """`["Email Address=email", "Plan=attributes.plan"]` as {lower-cased column: target}."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.partition("=")
        target = target.strip()
        if not sep or not column.strip():
            raise errors.InvalidInput.field("--map", f"{pair!r} is not column=field")
        if not _valid_target(target):
            raise errors.InvalidInput.field(
                "--map", f"{target!r} is not a field (use one of {', '.join(TARGETS)})"
            )
        mapping[column.strip().lower()] = target
    return mapping


def _valid_target(target: str) -> bool:
    if target.startswith("attributes."):
        return bool(target.removeprefix("attributes.").strip())
    return target in fields.PROFILE_FIELDS or target in ("tags", "ignore")


def plan_columns(header: Sequence[str], mapping: dict[str, str]) -> list[Column]:
    """Where each column of `header` goes; `mapping` (from `parse_mapping`) wins."""
    lowered = [h.strip().lower() for h in header]
    missing = [name for name in mapping if name not in lowered]
    if missing:
        raise errors.InvalidInput.field(
            "--map", f"no column {missing[0]!r} in the file (columns: {', '.join(header)})"
        )
    return [
        _target_column(mapping[low]) if low in mapping else _recognise(name, i)
        for i, (name, low) in enumerate(zip(header, lowered, strict=True))
    ]


def _target_column(target: str) -> Column:
    if target.startswith("attributes."):
        return Column("attribute", target.removeprefix("attributes.").strip())
    if target in ("tags", "ignore"):
        return Column(target)
    return Column("profile", target)


def _recognise(name: str, position: int) -> Column:
    stripped = name.strip()
    if stripped.lower().startswith("attributes.") and len(stripped) > len("attributes."):
        # Our own export: values are typed (JSON when they parse as JSON).
        return Column("json_attribute", stripped[len("attributes.") :])
    target = IMPORT_ALIASES.get(fields.alias_key(stripped))
    if target == "tags":
        return Column("tags")
    if target is not None:
        return Column("profile", target)
    return Column("attribute", snake_case(stripped) or f"column_{position + 1}")


def snake_case(name: str) -> str:
    """`MEMBER_RATING` -> `member_rating`, `State/Region` -> `state_region`,
    `leadStatus` -> `lead_status`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^0-9a-z]+", "_", spaced.lower()).strip("_")


def row_item(cells: Sequence[str], plan: Sequence[Column]) -> dict[str, Any]:
    """One CSV row as a `bulk.upsert` item; empty cells are left out."""
    item: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    if len(cells) > len(plan):
        raise errors.InvalidInput.field("row", f"{len(cells)} cells but {len(plan)} columns")
    for cell, column in zip(cells, plan, strict=False):
        kind = column.kind
        if not cell or kind == "ignore" or cell.isspace():
            continue
        value = exporter.unescape(cell) if cell[0] == "'" else cell  # the common case inline
        if kind == "attribute":
            attributes[column.name] = value
        elif kind == "profile":
            item[column.name] = _country(value) if column.name == "country" else value
        elif kind == "json_attribute":
            attributes[column.name] = exporter.typed(value)
        else:
            item["tags"] = [*item.get("tags", ()), *_split_tags(value)]
    if attributes:
        item["attributes"] = attributes
    return item


def _split_tags(value: str) -> list[str]:
    # Mailchimp writes `"Customer","VIP"` inside the cell; we write `Customer,VIP`.
    return [t.strip().strip('"').strip() for t in value.split(",") if t.strip().strip('"')]


def _country(value: str) -> str:
    """HubSpot's `Country/Region` holds names (`Germany`); the profile wants `DE`."""
    if len(value) <= 3:
        return value
    return _country_names().get(value.strip().lower(), value)


@functools.cache
def _country_names() -> dict[str, str]:
    names = Locale("en").territories
    return {str(name).lower(): str(code) for code, name in names.items() if str(code).isalpha()}
