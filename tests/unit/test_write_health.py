"""WriteHealth forgets a call's failures only when that call's own retry fixed them."""

from __future__ import annotations

from collections.abc import Sequence

from ticktape.errors import StoreUnavailable
from ticktape.store.base import WriteHealth

LOST = StoreUnavailable("server closed the connection")
FULL = StoreUnavailable("disk full")


def _retried_call(
    health: WriteHealth,
    *,
    others_during: Sequence[Exception] = (),
    others_after: Sequence[Exception] = (),
    worked: bool = True,
) -> None:
    """One call whose one failed attempt (LOST) is retried, as ``RetryingStore`` does:
    others' failures during that attempt or after it, its retry working or not."""
    before = health.mark()
    for exc in others_during:
        health.failed(exc)
    health.failed(LOST)
    after = health.mark()
    for exc in others_after:
        health.failed(exc)
    if worked:
        health.succeeded()
        assert health.failure is not None  # held, as it would be without the retry
    health.forgive(before, after, errors=1)


def test_a_failure_its_retry_fixed_is_forgotten_but_counted() -> None:
    health = WriteHealth("t")
    _retried_call(health)
    assert health.failure is None
    assert health.failures == 1


def test_an_earlier_failure_still_held_is_kept() -> None:
    health = WriteHealth("t")
    health.failed(FULL)
    health.succeeded()
    _retried_call(health)
    assert health.failure == str(FULL)


def test_a_failure_after_the_calls_last_failed_attempt_is_not_forgiven() -> None:
    health = WriteHealth("t")
    _retried_call(health, others_after=[FULL])
    assert health.failure == str(FULL)


def test_more_failures_than_the_call_had_are_not_forgiven() -> None:
    health = WriteHealth("t")
    _retried_call(health, others_during=[FULL])
    assert health.failure == str(LOST)


def test_nothing_is_forgiven_before_a_use_works_again() -> None:
    health = WriteHealth("t")
    _retried_call(health, worked=False)
    assert health.failure == str(LOST)
