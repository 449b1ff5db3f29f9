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

    def test_groups_sharing_a_location_only_in_part(self) -> None:
        data = {
            "groups": [
                {"name": "one", "members": ["s3://a/", "gs://b/"]},
                {"name": "two", "members": ["gs://b/sub/", "az://c@d/"]},
            ]
        }
        with pytest.raises(ConfigError, match="groups 'one' and 'two' overlap at gs://b/"):
            load_config(data)

    def test_a_cycle_of_groups_is_named(self) -> None:
        """A write would reach a member by two paths: once through each way round."""
        data = {"groups": [*CHAIN["groups"], {"name": "three", "members": [C, A]}]}
        with pytest.raises(
            ConfigError,
            match=(
                "replication groups form a cycle: group 'three' -> az://c@d/x/ -> "
                "group 'two' -> gs://b/x/ -> group 'one' -> s3://a/x/ -> group 'three'"
            ),
        ):
            load_config(data)

    def test_two_groups_of_the_same_two_members_are_a_cycle(self) -> None:
        data = {"groups": [{"name": "one", "members": [A, B]}, {"name": "two", "members": [B, A]}]}
        with pytest.raises(ConfigError, match="form a cycle"):
            load_config(data)

    def test_a_route_into_a_chain_member_would_loop(self) -> None:
        route = {"name": "r", "source": "file:///in/", "destinations": [B]}
        with pytest.raises(ConfigError, match="member gs://b/x/ overlaps gs://b/x/ of route 'r'"):
            load_config({**CHAIN, "routes": [route]})

    def test_a_groups_delayed_deletes_need_their_delay(self) -> None:
        with pytest.raises(ConfigError, match="needs a positive delete_delay"):
            load_config(group(delete_policy="delayed"))
        with pytest.raises(ConfigError, match="applies only with"):
            load_config(group(delete_delay="1d"))
        routes = load_config(group(delete_policy="delayed", delete_delay="1d")).routes
        assert {(r.delete_policy, r.delete_delay) for r in routes} == {
            ("delayed", timedelta(days=1))
        }

    def test_routes_cannot_claim_a_group(self) -> None:
        route = {"name": "r", "source": "s3://x/", "destinations": ["gs://y/"]}
        members = ["s3://x/", "gs://y/"]
        tag = {"name": "g", "members": members, "index": 0, "chain": members, "dataset": "g"}
        with pytest.raises(ConfigError, match="group is set on the routes"):
            load_config({"routes": [{**route, "group": tag}]})

    def test_nothing_to_replicate(self) -> None:
        with pytest.raises(ConfigError, match=r"no \[\[routes\]\] and no \[\[groups\]\]"):
            load_config({})


T = datetime(2026, 11, 30, 12, 0, 0, 250_000, tzinfo=UTC)

A, B, C, D = "s3://a/x/", "gs://b/x/", "az://c@d/x/", "file:///e/x/"
CHAIN: dict[str, list[dict[str, object]]] = {
    "groups": [{"name": "one", "members": [A, B]}, {"name": "two", "members": [B, C]}]
}


class TestChains:
    def test_groups_sharing_a_member_are_one_chain(self) -> None:
        """One dataset for the chain, named after its first group, and one member order for
        the rule's ties: members in the order they first appear in the file."""
        config = load_config({"groups": [*CHAIN["groups"], {"name": "three", "members": [D, C]}]})
        assert [(r.name, r.source, [d.url for d in r.destinations]) for r in config.routes] == [
            ("one.1", A, [B]),
            ("one.2", B, [A]),
            ("two.1", B, [C]),
            ("two.2", C, [B]),
            ("three.1", D, [C]),
            ("three.2", C, [D]),
        ]
        for route in config.routes:
            assert route.group is not None
            assert route.group.chain == (A, B, C, D)
            assert route.dataset == "one"

    def test_lone_groups_keep_their_own_order_and_dataset(self) -> None:
        config = load_config(
            {"groups": [{"name": "one", "members": [B, A]}, {"name": "two", "members": [C, D]}]}
        )
        tags = {r.name: r.group for r in config.routes}
        assert tags["one.1"] is not None
        assert tags["one.1"].chain == (B, A)
        assert tags["two.2"] is not None
        assert tags["two.2"].chain == (C, D)
        assert {r.dataset for r in config.routes} == {"one", "two"}

    def test_a_write_at_the_shared_member_goes_to_both_groups(self) -> None:
        router = Router(load_config(CHAIN))
        targets = router.targets(B + "k")
        assert [(t.route.name, t.dest_url) for t in targets] == [
            ("one.2", A + "k"),
            ("two.1", C + "k"),
        ]

    def test_one_key_anywhere_in_the_chain_is_one_kafka_key(self) -> None:
        router = Router(load_config(CHAIN))
        assert {router.ordering_key(member + "k") for member in (A, B, C)} == {A + "k"}

    def test_a_group_forwards_only_the_replicas_another_group_wrote(self) -> None:
        routes = {r.name: r for r in load_config(CHAIN).routes}
        to_c, to_a = routes["two.1"].group, routes["one.2"].group
        assert to_c is not None
        assert to_a is not None
        assert to_c.forwards(A + "k")  # group one wrote it at B
        assert not to_c.forwards(C + "k")  # group two's own replica: it would loop
        assert not to_a.forwards(A + "k")  # back where it came from
        assert to_a.forwards(C + "k")
        assert not to_c.forwards("s3://elsewhere/k")  # not the chain's
        assert [to_c.rank(url + "k") for url in (A, B, C)] == [0, 1, 2]

    def test_a_chain_tie_goes_to_the_member_first_in_the_file(self) -> None:
        """A's and C's writes in the same second: every member compares the same two
        contenders (the writes' own members and times, which forwarded replicas carry), so
        A wins everywhere, whichever group asks."""
        at_a = Contender(0, T, "va")
        at_c = Contender(2, T + timedelta(milliseconds=300), "vc")
        assert winner(at_a, at_c) is at_a
        assert winner(at_c, at_a) is at_a


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
