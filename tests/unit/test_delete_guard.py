"""The per-route delete safety limit pauses deletions once exceeded."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from replicator.daemon.deletes import DeleteGuard
from replicator.pipeline.rules import load_config
from replicator.pipeline.worker import PermanentFailure


def test_limit_pauses_the_route_and_stays_paused() -> None:
    config = load_config(
        {
            "routes": [
                {
                    "name": "a",
                    "source": "s3://a/",
                    "destinations": ["gs://a/"],
                    "max_deletes_per_minute": 3,
                },
                {"name": "b", "source": "s3://b/", "destinations": ["gs://b/"]},
            ]
        }
    )
    route_a, route_b = config.routes
    guard = DeleteGuard()
    for _ in range(3):
        guard.admit(route_a)
    with pytest.raises(PermanentFailure, match="exceeded 3 deletes per minute"):
        guard.admit(route_a)
    with pytest.raises(PermanentFailure, match="paused"):
        guard.admit(route_a)
    assert guard.paused == {"a"}
    guard.admit(route_b)  # other routes are unaffected


def test_zero_means_no_deletions() -> None:
    config = load_config(
        {
            "routes": [
                {
                    "name": "a",
                    "source": "s3://a/",
                    "destinations": ["gs://a/"],
                    "max_deletes_per_minute": 0,
                }
            ]
        }
    )
    with pytest.raises(PermanentFailure):
        DeleteGuard().admit(config.routes[0])


def test_a_paused_route_shows_in_the_metrics() -> None:
    registry = CollectorRegistry()
    config = load_config(
        {
            "routes": [
                {
                    "name": "a",
                    "source": "s3://a/",
                    "destinations": ["gs://a/"],
                    "max_deletes_per_minute": 1,
                }
            ]
        }
    )
    guard = DeleteGuard(registry)
    guard.admit(config.routes[0])
    assert registry.get_sample_value("replicator_route_deletes_paused", {"route": "a"}) is None
    with pytest.raises(PermanentFailure):
        guard.admit(config.routes[0])
    assert registry.get_sample_value("replicator_route_deletes_paused", {"route": "a"}) == 1
