"""``LogThrottle``: the first event's line is due at once, then at most one per interval
(or at once for a new key), each carrying the count of events since the last line."""

from __future__ import annotations

from ticktape.throttle import LogThrottle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_event_is_due_at_once_and_the_rest_are_counted_into_the_next_line() -> None:
    clock = FakeClock()
    throttle = LogThrottle(10.0, clock)
    assert throttle.event() == 1
    clock.now += 1
    assert throttle.event() is None
    assert throttle.event(3) is None
    clock.now += 8.9  # 9.9 s after the line
    assert throttle.event() is None
    clock.now += 0.1  # 10 s after it: due, with the five events since it plus this one
    assert throttle.event() == 6
    assert throttle.event() is None  # counted from 0 again
    clock.now += 10
    assert throttle.event(2) == 3


def test_a_new_key_is_due_at_once_and_the_interval_runs_from_its_line() -> None:
    clock = FakeClock()
    throttle = LogThrottle(60.0, clock)
    assert throttle.event(key="disk full") == 1
    assert throttle.event(key="disk full") is None
    assert throttle.event(key="I/O error") == 2
    clock.now += 30
    assert throttle.event(key="I/O error") is None
    clock.now += 30
    assert throttle.event(key="I/O error") == 2


def test_a_given_time_replaces_the_clock() -> None:
    throttle = LogThrottle(10.0, clock=lambda: 0.0)
    assert throttle.event(now=-5.0) == 1  # whatever the first time, the first is due
    assert throttle.event(now=4.9) is None
    assert throttle.event(now=5.0) == 2
