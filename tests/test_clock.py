from datetime import UTC, datetime, timedelta

import pytest

from tidings.clock import FakeClock, SystemClock


def test_system_clock_is_aware_utc() -> None:
    assert SystemClock().now().tzinfo is UTC


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    assert clock.now() == clock.now() == datetime(2026, 3, 1, tzinfo=UTC)
    assert clock.advance(hours=2) == datetime(2026, 3, 1, 2, tzinfo=UTC)
    clock.advance(timedelta(days=1))
    assert clock.now() == datetime(2026, 3, 2, 2, tzinfo=UTC)


def test_fake_clock_refuses_naive_times_and_going_back() -> None:
    with pytest.raises(ValueError, match="aware"):
        FakeClock(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="backwards"):
        FakeClock().advance(seconds=-1)
