"""Routing rules: matching, filters, and configuration errors refused at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.engine.units import parse_duration, parse_size
from replicator.errors import ConfigError
from replicator.pipeline.rules import Router, load_config, load_config_file

BASE = {
    "routes": [
        {
            "name": "clickstream",
            "source": "s3://lake/clickstream/",
            "destinations": [
                {"url": "gs://ml/clickstream/", "region": "europe-west4"},
                "az://lake/clickstream/",
            ],
            "include": ["*.parquet"],
            "exclude": ["_tmp/*"],
        }
    ]
}


def test_targets_map_relative_keys() -> None:
    router = Router(load_config(BASE))
    targets = router.targets("s3://lake/clickstream/day 1/part-0.parquet")
    assert [t.dest_url for t in targets] == [
        "gs://ml/clickstream/day 1/part-0.parquet",
        "az://lake/clickstream/day 1/part-0.parquet",
    ]


@pytest.mark.parametrize(
    "url",
    [
        "s3://lake/clickstream/_tmp/x.parquet",  # excluded
        "s3://lake/clickstream/notes.txt",  # not included
        "s3://lake/other/x.parquet",  # other prefix
        "s3://lake/clickstream/",  # the prefix itself
        "gs://lake/clickstream/x.parquet",  # other store
    ],
)
def test_filtered_out(url: str) -> None:
    assert Router(load_config(BASE)).targets(url) == []


def test_residency_refuses_at_load() -> None:
    config = {**BASE, "residency": {"allowed": ["region:europe-*"]}}
    with pytest.raises(ConfigError, match="az://lake/clickstream/ is not in the residency"):
        load_config(config)


def test_residency_allows_by_url_or_region() -> None:
    config = {**BASE, "residency": {"allowed": ["region:europe-*", "az://*"]}}
    assert load_config(config).residency.allowed == ("region:europe-*", "az://*")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": "ftp://x/"}, "unknown store scheme"),
        ({"destinations": []}, "destinations"),
        ({"delete_policy": "sometimes"}, "delete_policy"),
        ({"concurrency": 0}, "concurrency"),
        ({"destinations": ["s3://lake/clickstream/copy/"]}, "overlaps the source"),
        ({"colour": "blue"}, "colour"),
        ({"delete_policy": "delayed"}, "needs a positive delete_delay"),
        ({"delete_policy": "delayed", "delete_delay": "0s"}, "needs a positive delete_delay"),
        ({"delete_policy": "delayed", "delete_delay": "soon"}, "invalid duration 'soon'"),
        ({"delete_delay": "7d"}, "applies only with delete_policy"),
    ],
)
def test_bad_route_is_refused_with_its_field(change: dict[str, object], message: str) -> None:
    config = {"routes": [{**BASE["routes"][0], **change}]}  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_delayed_deletes_carry_their_delay() -> None:
    config = {"routes": [{**BASE["routes"][0], "delete_policy": "delayed", "delete_delay": "7d"}]}
    route = load_config(config).routes[0]  # type: ignore[arg-type]
    assert route.delete_delay is not None
    assert route.delete_delay.days == 7


def test_an_invalid_item_is_reported_once_with_its_own_reason() -> None:
    """Not also as a list 'too short' for every enclosing list."""
    bad = {**BASE["routes"][0], "destinations": ["ftp://x/"]}
    with pytest.raises(ConfigError) as caught:
        load_config({"routes": [bad]})
    assert "unknown store scheme" in str(caught.value)
    assert "at least 1 item" not in str(caught.value)


def test_duplicate_route_names() -> None:
    with pytest.raises(ConfigError, match="unique"):
        load_config({"routes": [BASE["routes"][0], BASE["routes"][0]]})


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[routes]\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(bad)


def test_durations() -> None:
    assert parse_duration("90s").total_seconds() == 90
    assert parse_duration("2d").total_seconds() == 172800
    assert parse_duration("250ms").total_seconds() == 0.25
    assert parse_duration("1.5s").total_seconds() == 1.5
    with pytest.raises(ConfigError):
        parse_duration("1w")
    with pytest.raises(ConfigError, match="too long"):
        parse_duration("9" * 400 + "d")


def test_sizes() -> None:
    assert parse_size("16MiB") == 16 * 1024 * 1024
    assert parse_size("8 MB") == 8_000_000
    assert parse_size("100") == 100
    with pytest.raises(ConfigError, match="invalid size"):
        parse_size("lots")
    with pytest.raises(ConfigError, match="too large"):
        parse_size("1" * 400 + "GiB")


def test_overlapping_sources_are_refused() -> None:
    inner = {
        **BASE["routes"][0],
        "name": "inner",
        "source": "s3://lake/clickstream/eu/",
        "destinations": ["gs://other/"],
    }
    with pytest.raises(ConfigError, match="overlap"):
        load_config({"routes": [BASE["routes"][0], inner]})
