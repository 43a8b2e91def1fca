"""Signed tokens: what is made can be read back, and nothing else can."""

import string

from hypothesis import given
from hypothesis import strategies as st

from tidings.tracking.tokens import PURPOSES, Tokens

TOKENS = Tokens("test secret")
numbers = st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=1, max_size=3)
purposes = st.sampled_from(sorted(PURPOSES))


@given(purposes, numbers)
def test_a_token_reads_back_as_its_numbers(purpose: str, values: list[int]) -> None:
    token = TOKENS.make(purpose, *values)
    assert TOKENS.read(purpose, token, len(values)) == tuple(values)
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")


@given(purposes, numbers)
def test_an_address_token_is_lower_case_and_reads_in_any_case(
    purpose: str, values: list[int]
) -> None:
    token = TOKENS.make_address_part(purpose, *values)
    assert token == token.lower()
    assert TOKENS.read_address_part(purpose, token.upper(), len(values)) == tuple(values)


@given(purposes, purposes, numbers)
def test_a_token_is_only_good_for_its_purpose(first: str, second: str, values: list[int]) -> None:
    token = TOKENS.make(first, *values)
    assert (TOKENS.read(second, token, len(values)) is not None) == (first == second)


@given(numbers, st.data())
def test_any_changed_character_is_refused(values: list[int], data: st.DataObject) -> None:
    token = TOKENS.make("click", *values)
    at = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.sampled_from(string.ascii_letters + string.digits + "-_"))
    changed = token[:at] + replacement + token[at + 1 :]
    if changed != token:
        assert TOKENS.read("click", changed, len(values)) is None


@given(st.text(max_size=200))
def test_garbage_is_refused_without_error(garbage: str) -> None:
    assert TOKENS.read("open", garbage, 1) is None
    assert TOKENS.read_address_part("bounce", garbage, 1) is None


def test_another_secret_refuses_the_token() -> None:
    token = TOKENS.make("unsubscribe", 42)
    assert Tokens("another secret").read("unsubscribe", token, 1) is None


def test_the_wrong_count_of_numbers_is_refused() -> None:
    assert TOKENS.read("click", TOKENS.make("click", 7, 2), 1) is None


def test_tokens_are_short() -> None:
    assert len(TOKENS.make("click", 10**9, 12)) <= 32
