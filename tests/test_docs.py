"""The reference pages generated from the code must be up to date (`make docs`)."""

import pytest

from tidings import docgen


@pytest.mark.parametrize("name", sorted(docgen.PAGES))
def test_generated_reference_is_current(name: str) -> None:
    committed = (docgen.REFERENCE / name).read_text()
    assert committed == docgen.PAGES[name](), f"docs/reference/{name} is stale: run `make docs`"
