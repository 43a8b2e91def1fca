"""The NUL character (U+0000): PostgreSQL cannot store it in text or JSON, and SQLite cuts
strings at it, so every input that may hold one is refused, naming where it is."""

from __future__ import annotations

from typing import Any


def find(value: Any, path: str) -> str | None:
    """The path of the first string (or object key) in `value` holding a NUL, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return where
            found = find(item, where)
            if found:
                return found
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find(item, f"{path}[{index}]")
            if found:
                return found
    return None


MESSAGE = "contains a NUL character (\\u0000)"
