"""Replication groups: the configuration's expansion into routes, its refusals, and the
conflict rule (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from replicator.errors import ConfigError
from replicator.pipeline.groups import Contender, change_time, winner
from replicator.pipeline.rules import Router, load_config, load_config_file

MEMBERS = ["s3://lake-us/data/", "gs://lake-eu/data/", "az://lake@asia/data/"]


def group(**overrides: object) -> dict[str, object]:
    return {"groups": [{"name": "lake", "members": MEMBERS, **overrides}]}


class TestExpansion:
    def test_each_member_is_a_route_to_every_other_member_in_member_order(self) -> None:
        config = load_config(group(include=["*.parquet"], delete_policy="never"))
        assert [(r.name, r.source) for r in config.routes] == [
            ("lake.1", MEMBERS[0]),
            ("lake.2", MEMBERS[1]),
            ("lake.3", MEMBERS[2]),
        ]
        for index, route in enumerate(config.routes):
            assert [d.url for d in route.destinations] == [
                m for m in MEMBERS if m != MEMBERS[index]
            ]
            assert route.group is not None
            assert route.group.members == tuple(MEMBERS)
            assert route.group.index == index
            assert route.dataset == "lake"
            assert route.include == ("*.parquet",)
            assert route.delete_policy == "never"

    def test_a_write_at_any_member_goes_to_the_others(self) -> None:
        router = Router(load_config(group()))
        targets = router.targets("gs://lake-eu/data/day 1/x.parquet")
        assert [t.dest_url for t in targets] == [
            "s3://lake-us/data/day 1/x.parquet",
            "az://lake@asia/data/day 1/x.parquet",
        ]
        assert {t.route.name for t in targets} == {"lake.2"}

    def test_one_key_at_every_member_is_published_under_one_kafka_key(self) -> None:
        """So one worker applies them in order: a copy from one member never races a deletion
        of the same key at another."""
        router = Router(load_config(group()))
        keys = {router.ordering_key(member + "day 1/x.parquet") for member in MEMBERS}
        assert keys == {MEMBERS[0] + "day 1/x.parquet"}
        other = Router(
            load_config(
                {"routes": [{"name": "r", "source": "s3://a/", "destinations": ["gs://b/"]}]}
            )
        )
        assert other.ordering_key("s3://a/k") == "s3://a/k"

    def test_groups_and_routes_side_by_side(self, tmp_path: Path) -> None:
        path = tmp_path / "replicator.toml"
        path.write_text(
            '[[routes]]\nname = "logs"\nsource = "s3://logs/"\ndestinations = ["gs://logs/"]\n\n'
            '[[groups]]\nname = "lake"\n'
            'members = ["s3://lake-us/", { url = "gs://lake-eu/", region = "europe-west4" }]\n'
        )
        config = load_config_file(path)
        assert [r.name for r in config.routes] == ["logs", "lake.1", "lake.2"]
        assert config.routes[1].destinations[0].region == "europe-west4"

    def test_residency_applies_to_members(self) -> None:
        data = {**group(), "residency": {"allowed": ["s3://*", "gs://*"]}}
        with pytest.raises(ConfigError, match="az://lake@asia/data/ is not in the residency"):
            load_config(data)


class TestRefusals:
    @pytest.mark.parametrize(
        ("members", "problem"),
        [
            (["s3://a/x/", "gs://b/", "s3://a/x/"], "member s3://a/x/ is listed twice"),
            (["s3://a/"], "at least 2 items"),
            (["s3://a/", "s3://a/inner/"], "members s3://a/ and s3://a/inner/ overlap"),
        ],
    )
    def test_members(self, members: list[str], problem: str) -> None:
        with pytest.raises(ConfigError, match=problem):
            load_config({"groups": [{"name": "lake", "members": members}]})

    def test_a_member_used_by_a_route_would_loop(self) -> None:
        data = {
            **group(),
            "routes": [
                {"name": "out", "source": "s3://other/", "destinations": ["gs://lake-eu/data/x/"]}
            ],
        }
        with pytest.raises(ConfigError, match="member gs://lake-eu/data/ overlaps"):
            load_config(data)

    def test_a_location_in_two_groups(self) -> None:
        data = {
            "groups": [
                {"name": "one", "members": ["s3://a/", "gs://b/"]},
                {"name": "two", "members": ["gs://b/sub/", "az://c@d/"]},
            ]
        }
        with pytest.raises(ConfigError, match="groups 'one' and 'two' share the location"):
            load_config(data)

    def test_delayed_deletes_are_not_for_groups(self) -> None:
        with pytest.raises(ConfigError, match="delete_policy"):
            load_config(group(delete_policy="delayed", delete_delay="1d"))

    def test_routes_cannot_claim_a_group(self) -> None:
        route = {"name": "r", "source": "s3://x/", "destinations": ["gs://y/"]}
        tag = {"name": "g", "members": ["s3://x/", "gs://y/"], "index": 0}
        with pytest.raises(ConfigError, match="group is set on the routes"):
            load_config({"routes": [{**route, "group": tag}]})

    def test_nothing_to_replicate(self) -> None:
        with pytest.raises(ConfigError, match=r"no \[\[routes\]\] and no \[\[groups\]\]"):
            load_config({})


T = datetime(2026, 11, 30, 12, 0, 0, 250_000, tzinfo=UTC)


class TestRule:
    def test_the_later_change_wins_whichever_side_asks(self) -> None:
        early = Contender(0, T, "v1")
        late = Contender(1, T + timedelta(seconds=1), "v2")
        assert winner(early, late) is late
        assert winner(late, early) is late

    def test_within_one_second_the_first_member_wins(self) -> None:
        """Times count in whole seconds (S3's Last-Modified precision), so 12:00:00.250 and
        12:00:00.900 are a tie, settled by the member order."""
        first = Contender(0, T, "v1")
        second = Contender(1, T + timedelta(milliseconds=650), "v2")
        assert winner(first, second) is first
        assert winner(second, first) is first

    def test_deletions_take_part(self) -> None:
        write = Contender(1, T, "v1")
        later_delete = Contender(0, T + timedelta(seconds=2), None)
        earlier_delete = Contender(0, T - timedelta(seconds=2), None)
        assert winner(write, later_delete) is later_delete
        assert winner(earlier_delete, write) is write
        assert later_delete.deleted
        assert not write.deleted

    def test_change_time_is_utc_whole_seconds(self) -> None:
        local = T.astimezone(timezone(timedelta(hours=1)))
        assert change_time(local) == datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
