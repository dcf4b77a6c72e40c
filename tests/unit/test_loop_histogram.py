"""The collect runners' commit-lag histogram (``LoopHistogram``, observed per stored
batch) exposes what a Prometheus ``Histogram`` with the same buckets exposes for the
same observations: every bucket (a value on a bound is in it), the count and the sum."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ticktape.metrics import COMMIT_LAG_BUCKETS_S, LoopHistogram, Metrics


def _exposed(registry: CollectorRegistry) -> list[str]:
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if "_created" not in line  # Prometheus' creation time: not a figure of ours
    ]


def test_it_exposes_what_a_prometheus_histogram_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    lag = LoopHistogram("lag_seconds", "doc", COMMIT_LAG_BUCKETS_S)
    ours.register(lag)
    reference = Histogram("lag_seconds", "doc", buckets=COMMIT_LAG_BUCKETS_S, registry=theirs)
    values = [0.0, -1.0, 0.003, *COMMIT_LAG_BUCKETS_S, 0.0101, 0.07, 0.07, 29.9, 30.01, 1e9]
    for value in values * 3:
        lag.observe(value)
        reference.observe(value)
    got = _exposed(ours)
    assert got == _exposed(theirs)
    assert f"lag_seconds_count {float(3 * len(values))}" in got


def test_the_instance_metrics_expose_the_commit_lag() -> None:
    metrics = Metrics()
    metrics.feed_commit_lag.observe(0.02)
    text = metrics.render().decode()
    assert 'ticktape_feed_commit_lag_seconds_bucket{le="0.025"} 1.0' in text
    assert "ticktape_feed_commit_lag_seconds_count 1.0" in text
